"""The ``cassette`` command: read cassettes the way they are reviewed, and run things through
the proxy in CI. Exit codes: 0 ok, 1 a check failed (or the system refused a file: one line
naming it), 2 usage error.

One module per group of commands: ``review`` (ls, show, text, stale), ``diff``, ``explain``
and ``volatile`` (normalisers: what they replace in a request, and the options two recordings of
the same tests call for), ``verify`` (verify, scrub: the secret rules on files), ``convert``
(llama-stack import and export), ``run`` (run, proxy), ``about`` (--version, addon-path: what
this install is); ``common`` holds what they share. A command's module is imported when that
command runs (or ``--help`` lists them all): ``cassette run`` pays for its own imports only, not
for every other command's (the cassette store, rich: 0.4 s of its start on this machine).
"""

from __future__ import annotations

import importlib
import io
import os
import sys

import click

from proxy_addon.cli import about

# Each command's name: the module under proxy_addon.cli and the attribute that define it.
COMMANDS = {
    "ls": ("review", "ls_command"),
    "show": ("review", "show_command"),
    "text": ("review", "text_command"),
    "stale": ("review", "stale_command"),
    "diff": ("diff", "diff_command"),
    "explain": ("explain", "explain_command"),
    "volatile": ("volatile", "volatile_command"),
    "verify": ("verify", "verify_command"),
    "scrub": ("verify", "scrub_command"),
    "import-llama-stack": ("convert", "import_command"),
    "export-llama-stack": ("convert", "export_command"),
    "run": ("run", "run_command"),
    "proxy": ("run", "proxy_command"),
    "addon-path": ("about", "addon_path_command"),
}


class _Commands(click.Group):
    """The group, whose commands end on what the system refuses them (a directory that is a
    file, a disk full, a permission denied) with one line naming the file, not a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except OSError as e:
            where = f"{os.fsdecode(e.filename)}: " if e.filename is not None else ""
            raise click.ClickException(f"{where}{e.strerror or e}") from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attribute = COMMANDS[name]
        command = getattr(importlib.import_module(f"proxy_addon.cli.{module}"), attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@about.version_option
def main() -> None:
    """Inspect LLM API cassettes and run commands through the recording proxy.

    \b
    Example:
      cassette ls --grep gpt-4o
      cassette run --mode replay -- pytest -q
    """
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            # a file name that is not UTF-8 is shown escaped (\xff), never a crash
            stream.reconfigure(errors="backslashreplace")
