"""scripts/demo: replay the bundled cassettes to a real openai SDK client through the proxy."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import click

from proxy_addon.runner.process import start_proxy

ROOT = Path(__file__).resolve().parents[1]


@click.command()
@click.option(
    "--dir",
    "cassette_dir",
    default=str(ROOT / "cassettes"),
    show_default=True,
    help="Cassette directory to replay.",
)
@click.option(
    "--pace",
    default="1",
    show_default=True,
    help="Replay speed: 0 = at once, 1 = with the recorded gaps.",
)
@click.argument("prompt", default="Tell me a joke")
def main(cassette_dir: str, pace: str, prompt: str) -> None:
    """Start the proxy in replay mode, stream PROMPT's recorded answer, stop the proxy."""
    with tempfile.TemporaryDirectory(prefix="cassette-demo-") as confdir:
        proxy = start_proxy(
            cassette_dir, "replay", confdir=confdir, options={"cassette_pace": pace}
        )
        click.echo(
            f"proxy: replaying {cassette_dir} on {proxy.url} (HTTPS_PROXY), no network", err=True
        )
        try:
            code = subprocess.call(
                [sys.executable, str(ROOT / "scripts" / "demo_client.py"), prompt],
                env=proxy.client_env(),
            )
        finally:
            log = proxy.stop()
        summary = [
            line
            for line in log.splitlines()
            if "cassette summary" in line or "cassette miss" in line
        ]
        click.echo("\n".join(line.split("] ", 1)[-1] for line in summary), err=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
