"""The ``cassette`` command: read cassettes the way they are reviewed, and run things through
the proxy in CI. Exit codes: 0 ok, 1 a check failed, 2 usage error.

One module per group of commands: ``review`` (ls, show, text, stale), ``diff``, ``explain``
and ``volatile`` (normalisers: what they replace in a request, and the options two recordings of
the same tests call for), ``verify`` (verify, scrub: the secret rules on files), ``convert``
(llama-stack import and export), ``run`` (run, proxy), ``about`` (--version, addon-path: what
this install is); ``common`` holds what they share.
"""

from __future__ import annotations

import click

from proxy_addon.cli import about, convert, diff, explain, review, run, verify, volatile


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@about.version_option
def main() -> None:
    """Inspect LLM API cassettes and run commands through the recording proxy.

    \b
    Example:
      cassette ls --grep gpt-4o
      cassette run --mode replay -- pytest -q
    """


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
