"""Running things through the proxy: ``cassette run`` (a command, in CI) and ``cassette
proxy`` (the proxy in the foreground)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import NoReturn

import click

from proxy_addon.cli.common import dir_option
from proxy_addon.runner.process import (
    ProxyStartError,
    free_ports,
    mitmdump_args,
    set_options,
    start_proxy,
)
from proxy_addon.runner.providers import PROVIDERS, placeholder_keys, placeholder_note, plan
from proxy_addon.summary import MODES, NOTHING_REACHED, Summary, nothing_reached_fails

mode_option = click.option(
    "--mode",
    type=click.Choice(MODES),
    default="replay",
    show_default=True,
    help="replay, record, auto (replay hits, record misses), passthrough, "
    "refresh (re-record what has a recording, in its own file).",
)
older_option = click.option(
    "--older-than",
    "max_age",
    metavar="AGE",
    help="cassette_max_age: recordings older than AGE (30d, 12h) are "
    "stale; refresh mode re-records only them, replay warns.",
)
pace_option = click.option(
    "--pace",
    default="0",
    show_default=True,
    help="Stream replay speed: 0 at once, 1 recorded gaps, 0.5 twice as fast.",
)
set_option = click.option(
    "--set",
    "extra",
    multiple=True,
    metavar="NAME=VALUE",
    help="Any other mitmproxy or cassette option, e.g. ssl_insecure=true.",
)


def _options(
    pace: str, extra: Iterable[str], max_age: str | None = None
) -> dict[str, str | list[str]]:
    """The proxy's options, ``--set`` ones last (``process.set_options``)."""
    opts: dict[str, str | list[str]] = {"cassette_pace": pace}
    if max_age:
        opts["cassette_max_age"] = max_age
    try:
        return opts | set_options(extra)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--set") from None


def _fail_start(e: ProxyStartError) -> NoReturn:
    lines = [ln for ln in str(e).splitlines() if "Error" in ln or "cassette" in ln or "error" in ln]
    raise click.UsageError("the proxy did not start:\n" + "\n".join(lines or [str(e)]))


@click.command("run", context_settings={"ignore_unknown_options": True})
@mode_option
@pace_option
@older_option
@dir_option
@set_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run_command(
    mode: str,
    pace: str,
    max_age: str | None,
    cassette_dir: Path,
    extra: tuple[str, ...],
    command: tuple[str, ...],
) -> None:
    """Run COMMAND through a fresh proxy; exit with its code, or 1 when it passed but a replay
    missed, the proxy failed inside, a replay refused an upstream connection, or a stale
    recording was refused (cassette_stale=fail). Clients that read HTTPS_PROXY go through the
    forward proxy, the others through a base-URL listener per provider (OPENAI_BASE_URL,
    ANTHROPIC_BASE_URL, OLLAMA_HOST, ...). If no request reached the proxy it says so; in
    replay mode with CI=true that exits 1.

    \b
    Example: cassette run --mode replay -- pytest -q
             cassette run --mode refresh --older-than 30d -- pytest -q
    """
    with tempfile.TemporaryDirectory(prefix="cassette-run-") as tmp:
        summary_path = Path(tmp) / "summary.json"
        opts = _options(pace, extra, max_age) | {"cassette_summary": str(summary_path)}
        try:
            proxy = start_proxy(
                cassette_dir, mode, confdir=Path(tmp) / "ca", options=opts, listeners=True
            )
        except ProxyStartError as e:
            _fail_start(e)
        env = proxy.client_env()
        placeholders = placeholder_keys(env) if mode == "replay" else {}
        try:
            code = subprocess.call(list(command), env=env | placeholders)
        except OSError as e:  # not found, not executable, a directory...
            raise click.UsageError(f"cannot run {command[0]}: {e.strerror}") from None
        except KeyboardInterrupt:
            code = 130
        finally:
            proxy.stop()
        summary = Summary.read(summary_path)
        if summary is None:
            click.echo("cassette: the proxy wrote no summary; its log:\n" + proxy.log, err=True)
            sys.exit(code or 1)
    for message in summary.miss_report():
        click.echo(message, err=True)
    click.echo(summary.line(), err=True)
    if placeholders:
        click.echo(placeholder_note(placeholders), err=True)
    if code == 0 and summary.failed:  # a miss, a fault inside the proxy, a refused connection
        sys.exit(1)
    if summary.requests == 0:
        click.echo(f"cassette: warning: {NOTHING_REACHED}", err=True)
        if code == 0 and nothing_reached_fails(mode, os.environ):
            sys.exit(1)
    sys.exit(code)


@click.command("proxy")
@mode_option
@pace_option
@dir_option
@set_option
@click.option(
    "--port",
    default=8080,
    show_default=True,
    help="Port of the forward proxy (0: a free one); the providers' listeners "
    "take the next ones (free ones with 0).",
)
@click.option(
    "--listen-host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on: 0.0.0.0 to serve containers.",
)
@click.option(
    "--confdir",
    type=click.Path(path_type=Path),
    default=Path("~/.mitmproxy"),
    show_default=True,
    help="Where mitmproxy keeps its CA.",
)
def proxy_command(
    mode: str,
    pace: str,
    cassette_dir: Path,
    extra: tuple[str, ...],
    port: int,
    listen_host: str,
    confdir: Path,
) -> None:
    """Run the proxy in the foreground and print how to point a client at it.

    \b
    Example: cassette proxy --mode record --port 8080
    """
    confdir = confdir.expanduser()
    if port == 0:  # any free one, said below, as for the listeners
        port, *ports = free_ports(1 + len(PROVIDERS))
    else:
        ports = list(range(port + 1, port + 1 + len(PROVIDERS)))
    reach = "127.0.0.1" if listen_host in ("0.0.0.0", "::") else listen_host
    listeners = plan(os.environ, ports, reach)
    url = f"http://{reach}:{port}"
    ca = confdir / "mitmproxy-ca-cert.pem"
    click.echo(
        f"cassette proxy: {mode} mode over {cassette_dir}. Point a client at it:\n"
        f"  export HTTPS_PROXY={url} HTTP_PROXY={url}\n"
        f"  export SSL_CERT_FILE={ca} REQUESTS_CA_BUNDLE={ca} CURL_CA_BUNDLE={ca} "
        f"NODE_EXTRA_CA_CERTS={ca} AWS_CA_BUNDLE={ca}\n"
        "  or, for clients that ignore HTTPS_PROXY (no CA needed):\n"
        + "".join(
            f"  export {lst.provider.variable}={lst.value}   # -> {lst.upstream}, "
            f"read by {lst.provider.read_by}\n"
            for lst in listeners
        )
        + (
            "  (from a container, use this machine's address instead of 127.0.0.1)\n"
            if reach != listen_host
            else ""
        )
        + "Stop with Ctrl-C.",
        err=True,
    )
    args = mitmdump_args(
        cassette_dir,
        mode,
        confdir,
        port,
        _options(pace, extra),
        listeners=listeners,
        listen_host=listen_host,
    )
    os.execv(args[0], args)
