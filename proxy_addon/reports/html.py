"""The run as one self-contained HTML page (inline CSS, no script, nothing fetched), to attach
as a CI artifact: the verdict and counts, every request in a table, each failed request's
differing values and a side-by-side diff of its body against the nearest recording's, and links
to the cassette files."""

from __future__ import annotations

import difflib
from html import escape
from pathlib import Path
from typing import Any

from proxy_addon.printable import printable
from proxy_addon.reports.run import RunReport, outcome

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1f2328; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.5em; }
.failed h1 { color: #b42318; } .passed h1 { color: #1a7f37; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
tr.fails td { background: #ffebe9; }
code, .diff td { font: 12px ui-monospace, monospace; }
table.diff td { border: none; padding: 0 4px; white-space: pre-wrap; }
.diff_header { color: #6e7781; } .diff_next { display: none; }
.diff_add { background: #ccffd8; } .diff_chg { background: #fff5b1; }
.diff_sub { background: #ffd7d5; }
.muted { color: #6e7781; }
"""


def render(run: RunReport) -> str:
    body = [
        f"<h1>{escape(run.verdict())}</h1>",
        f"<p>{escape(run.tokens.line())}</p>" if run.tokens.input or run.tokens.output else "",
        _requests(run),
        *(
            _problem(run, n, r)
            for n, r in enumerate(run.requests, 1)
            if outcome(r["outcome"]).fails
        ),
        _unused(run),
    ]
    if run.requests_not_listed:
        body.append(f"<p class=muted>{run.requests_not_listed} requests not listed.</p>")
    return printable(
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>cassette {escape(run.mode)} report</title><style>{CSS}</style></head>"
        f"<body class={'failed' if run.failed else 'passed'}>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _requests(run: RunReport) -> str:
    rows = []
    for n, r in enumerate(run.requests, 1):
        fails = outcome(r["outcome"]).fails
        tokens = f"{r['input_tokens']} / {r['output_tokens']}" if "input_tokens" in r else ""
        label = outcome(r["outcome"]).label + "".join(f", {note}" for note in r.get("notes", []))
        label_html = f"<a href='#problem-{n}'>{escape(label)}</a>" if fails else escape(label)
        rows.append(
            f"<tr class={'fails' if fails else 'ok'}><td>{n}</td>"
            f"<td><code>{escape(r.get('test_id') or '')}</code></td>"
            f"<td><code>{escape(r['method'])} {escape(r['host'] + r['path'])}</code></td>"
            f"<td>{escape(r.get('model') or '')}</td><td>{label_html}</td>"
            f"<td>{_link(run, r.get('file') or r.get('nearest'))}</td>"
            f"<td>{r.get('ms', '')}</td><td>{tokens}</td></tr>"
        )
    return (
        f"<h2>Requests ({len(run.requests)})</h2><table><tr><th>#</th><th>Test</th>"
        "<th>Request</th><th>Model</th><th>Outcome</th><th>Cassette</th><th>ms</th>"
        "<th>Tokens in / out</th></tr>" + "".join(rows) + "</table>"
    )


def _problem(run: RunReport, n: int, r: dict[str, Any]) -> str:
    parts = [
        f"<h2 id='problem-{n}'>{escape(outcome(r['outcome']).title)}: "
        f"<code>{escape(r['method'])} {escape(r['host'] + r['path'])}</code></h2>",
        f"<p>{escape(r.get('message', ''))}</p>",
    ]
    diffs = r.get("differences", [])
    if diffs:
        parts.append(
            f"<p>Nearest recording: {_link(run, r.get('nearest'))}</p><table><tr><th>Path</th>"
            "<th>Asked</th><th>Recorded</th></tr>"
            + "".join(
                f"<tr><td><code>{escape(d['path'])}</code></td><td><code>{escape(d['asked'])}"
                f"</code></td><td><code>{escape(d['recorded'])}</code></td></tr>"
                for d in diffs
            )
            + "</table>"
        )
    if "asked_body" in r:
        parts.append(
            difflib.HtmlDiff(wrapcolumn=70).make_table(
                r["asked_body"].splitlines(),
                r["recorded_body"].splitlines(),
                "asked",
                "nearest recording",
                context=True,
                numlines=3,
            )
        )
    return "\n".join(parts)


def _unused(run: RunReport) -> str:
    paths = run.summary.unused
    if not paths:
        return ""
    items = "".join(f"<li>{_link(run, p)}</li>" for p in paths)
    return f"<h2>Unused recordings ({len(paths)})</h2><ul>{items}</ul>"


def _link(run: RunReport, path: str | None) -> str:
    """A cassette file: shown as ``RunReport.shown`` says, linked by its absolute URL."""
    if not path:
        return ""
    href = Path(path).as_uri() if Path(path).is_absolute() else path
    return f"<a href='{escape(href)}'><code>{escape(run.shown(path))}</code></a>"
