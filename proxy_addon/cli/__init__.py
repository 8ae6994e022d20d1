"""The ``cassette`` command: read cassettes the way they are reviewed, and run things through
the proxy in CI. Exit codes: 0 ok, 1 a check failed (or the system refused a file: one line
naming it), 2 usage error.

One module per group of commands: ``review`` (ls, show, text, stale), ``diff``, ``explain``
and ``volatile`` (normalisers: what they replace in a request, and the options two recordings of
the same tests call for), ``verify`` (verify, scrub: the secret rules on files), ``convert``
(llama-stack import and export), ``run`` (run, proxy), ``about`` (--version, addon-path: what
this install is); ``common`` holds what they share.
"""

from __future__ import annotations

import io
import os
import sys

import click

from proxy_addon.cli import about, convert, diff, explain, review, run, verify, volatile


class _Commands(click.Group):
    """The group, whose commands end on what the system refuses them (a directory that is a
    file, a disk full, a permission denied) with one line naming the file, not a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except OSError as e:
            where = f"{os.fsdecode(e.filename)}: " if e.filename is not None else ""
            raise click.ClickException(f"{where}{e.strerror or e}") from None


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


for command in (
    review.ls_command,
    review.show_command,
    review.text_command,
    review.stale_command,
    diff.diff_command,
    explain.explain_command,
    volatile.volatile_command,
    verify.verify_command,
    verify.scrub_command,
    convert.import_command,
    convert.export_command,
    run.run_command,
    run.proxy_command,
    about.addon_path_command,
):
    main.add_command(command)
