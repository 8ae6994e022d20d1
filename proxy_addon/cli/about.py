"""What an installed copy is: ``cassette --version`` (this package's, mitmproxy's and Python's
versions, and where the package is imported from, so a user can tell which install a command
runs) and ``cassette addon-path`` (the addon script for a plain ``mitmdump -s`` or ``mitmweb
-s``, wherever the package was installed: the README's recipes run from any folder)."""

from __future__ import annotations

import platform
import shutil
import sys
from importlib import metadata
from pathlib import Path

import click

import proxy_addon
from proxy_addon.runner.process import ADDON_SCRIPT

DISTRIBUTION = "llm-cassette-proxy"


def version_line() -> str:
    """``cassette 0.1.0 from /…/proxy_addon (mitmproxy 12.3.1, Python 3.13.0)``, as pip says
    where it runs from. Versions come from the installed metadata: mitmproxy is not imported."""
    package = Path(proxy_addon.__file__).resolve().parent
    return (
        f"cassette {metadata.version(DISTRIBUTION)} from {package} "
        f"(mitmproxy {metadata.version('mitmproxy')}, Python {platform.python_version()})"
    )


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    click.echo(version_line())
    ctx.exit()


version_option = click.option(
    "-V",
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show this package's, mitmproxy's and Python's versions and exit.",
)


@click.command("addon-path")
def addon_path_command() -> None:
    """Print the path of the addon script, for mitmdump or mitmweb -s.

    The addon imports this package, so it runs in the mitmdump installed beside it (the same
    environment); a note on stderr says so when the mitmdump on PATH is another one.

    \b
    Example: mitmdump -s "$(cassette addon-path)" --set cassette_mode=replay
    """
    click.echo(ADDON_SCRIPT)
    beside = Path(sys.executable).with_name("mitmdump")
    on_path = shutil.which("mitmdump")
    if on_path is None or Path(on_path).resolve() != beside.resolve():
        click.echo(
            f"note: the addon needs the mitmdump installed with this package, {beside}; "
            f"the one on PATH is {on_path or 'none'}",
            err=True,
        )
