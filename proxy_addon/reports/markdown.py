"""The run in Markdown, for ``$GITHUB_STEP_SUMMARY`` (or any file): short enough to read on the
job's page. A verdict, a table of the requests that failed the run (test, request, nearest
recording, what differs), the unused recordings, the counts, and the tokens served."""

from __future__ import annotations

from typing import Any

from proxy_addon.printable import printable
from proxy_addon.reports.run import RunReport, outcome

ROWS_SHOWN = 50  # problems listed in the table; the rest are counted
DIFFERENCES_SHOWN = 3  # differing paths shown in a row


def render(run: RunReport) -> str:
    lines = [f"### {'❌' if run.failed else '✅'} {_cell(run.verdict())}", ""]
    problems = run.problems
    if problems:
        lines += [
            "| Test | Request | Outcome | Nearest recording | What differs |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [_row(run, r) for r in problems[:ROWS_SHOWN]]
        if len(problems) > ROWS_SHOWN:
            lines.append(f"\n{len(problems) - ROWS_SHOWN} more not shown.")
        lines.append("")
    unused = run.summary.unused
    if unused:
        lines.append(f"Unused recordings ({len(unused)}):")
        lines += [f"- `{run.shown(path)}`" for path in unused[:ROWS_SHOWN]]
        if len(unused) > ROWS_SHOWN:
            lines.append(f"- and {len(unused) - ROWS_SHOWN} more")
        lines.append("")
    if run.tokens.input or run.tokens.output:
        lines += [_cell(run.tokens.line()), ""]
    if run.requests_not_listed:
        lines += [
            f"{run.requests_not_listed} requests not listed (the report keeps the first).",
            "",
        ]
    return printable("\n".join(lines))


def _row(run: RunReport, r: dict[str, Any]) -> str:
    if r["outcome"] == "miss":
        near = f"`{run.shown(r['nearest'])}`" if r.get("nearest") else "none for this endpoint"
        diffs = r.get("differences", [])
        what = "<br>".join(
            f"`{d['path']}`: `{_code(d['asked'])}` (recorded `{_code(d['recorded'])}`)"
            for d in diffs[:DIFFERENCES_SHOWN]
        ) + (
            f"<br>and {len(diffs) - DIFFERENCES_SHOWN} more"
            if len(diffs) > DIFFERENCES_SHOWN
            else ""
        )
    else:
        near, what = f"`{run.shown(r.get('file', ''))}`", _cell(r.get("reason") or r["message"])
    request = f"`{_code(r['method'] + ' ' + r['host'] + r['path'], 200)}`" + (
        f" ({_cell(r['model'])})" if r.get("model") else ""
    )
    test = f"`{_code(r['test_id'], 200)}`" if r.get("test_id") else "-"
    return f"| {test} | {request} | {outcome(r['outcome']).label} | {near} | {what or '-'} |"


def _cell(text: str) -> str:
    """Text safe inside a table cell: no pipe, no line break."""
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str, limit: int = 80) -> str:
    text = text if len(text) <= limit else text[:limit] + "..."
    return _cell(text).replace("`", "'")
