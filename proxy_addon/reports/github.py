"""GitHub Actions workflow commands: an ``::error`` annotation for each request that failed the
run (a miss, a stale recording refused), shown on the job and the pull request."""

from __future__ import annotations

from typing import Any

from proxy_addon.printable import printable
from proxy_addon.reports.run import RunReport, outcome

MAX_ANNOTATIONS = 10  # GitHub shows at most 10 error annotations per step


def error_commands(run: RunReport) -> list[str]:
    lines = [_annotation(r) for r in run.problems[:MAX_ANNOTATIONS]]
    left = len(run.problems) - MAX_ANNOTATIONS
    if left > 0:
        lines.append(f"::error title=cassette::{left} more failed requests (see the summary)")
    return lines


def _annotation(r: dict[str, Any]) -> str:
    title = outcome(r["outcome"]).title
    test = f"{r['test_id']}: " if r.get("test_id") else ""
    return f"::error title={_property(title)}::{_data(test + r.get('message', ''))}"


def _data(text: str) -> str:
    """A workflow command's message, escaped as the runner expects, and printable."""
    return printable(text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A"))


def _property(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")
