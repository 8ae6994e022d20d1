"""The reports' flags (``reports/publish.py``), the same for ``cassette run`` and ``cassette
proxy`` (and, prefixed ``--cassette-``, for the pytest plugin): ``--markdown``, ``--junit``,
``--report`` (HTML), ``--prices`` and ``--step-summary/--no-step-summary``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from proxy_addon.reports import publish
from proxy_addon.reports.publish import Targets

# The flags that name a file, each with the addon's option of the same name (cassette_NAME).
FILE_FLAGS = ("markdown", "junit", "report", "prices")


def report_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        [
            click.option("--markdown", metavar="PATH", default="", help="Write a Markdown report."),
            click.option("--junit", metavar="PATH", default="", help="Write a JUnit XML report."),
            click.option("--report", metavar="PATH", default="", help="Write an HTML report."),
            click.option(
                "--prices",
                metavar="FILE",
                default="",
                help='JSON prices, {"MODEL": {"input": USD, "output": USD}} per million '
                "tokens: the reports say what the tokens served from cassettes would cost.",
            ),
            click.option(
                "--step-summary/--no-step-summary",
                default=True,
                show_default=True,
                help="Under GitHub Actions: the Markdown report to $GITHUB_STEP_SUMMARY, and "
                "an error annotation per miss.",
            ),
        ]
    ):
        command = option(command)
    return command


def targets(reports: dict[str, Any]) -> Targets:
    """The targets of the flags' values (a bad price file is a usage error, at once)."""
    try:
        return publish.targets(
            reports["markdown"],
            reports["junit"],
            reports["report"],
            reports["step_summary"],
            reports["prices"],
        )
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--prices") from None


def as_options(reports: dict[str, Any]) -> dict[str, str]:
    """The flags as the addon's options, for a proxy that writes the reports itself when it
    stops (``cassette proxy``)."""
    opts = {f"cassette_{name}": reports[name] for name in FILE_FLAGS if reports[name]}
    return opts | ({} if reports["step_summary"] else {"cassette_step_summary": "false"})
