"""The cassette folder's option, which ``cassette run`` and ``cassette proxy`` share with the
commands that read cassettes: here, with click alone, so that ``run`` imports none of the
modules those commands read cassettes with (``common``)."""

from __future__ import annotations

from pathlib import Path

import click

dir_option = click.option(
    "--dir",
    "cassette_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default="cassettes",
    envvar="CASSETTE_DIR",
    show_default=True,
    show_envvar=True,
    help="Cassette directory.",
)
