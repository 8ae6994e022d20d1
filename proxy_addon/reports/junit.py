"""The run as JUnit XML, which GitLab, Jenkins, CircleCI and Buildkite read: one test case per
test id (each of its requests a line of it), or per request when requests carry no test id
(``cassette run`` of a command); a request that failed the run is its case's failure.
Well-formed whatever a request held: control characters are written as visible escapes."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

from proxy_addon.printable import printable
from proxy_addon.reports.run import RunReport, outcome


def render(run: RunReport) -> str:
    cases = _cases(run.requests)
    failures = sum(1 for records in cases.values() if _failed(records))
    seconds = f"{sum(r.get('ms', 0) for r in run.requests) / 1000:.3f}"
    suites = ET.Element(
        "testsuites", name="cassette", tests=str(len(cases)), failures=str(failures), time=seconds
    )
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"cassette {run.mode}",
        tests=str(len(cases)),
        failures=str(failures),
        errors="0",
        skipped="0",
        time=seconds,
        timestamp=_started(run.requests),
    )
    for name, records in cases.items():
        case = ET.SubElement(
            suite,
            "testcase",
            classname="cassette",
            name=name,
            time=f"{sum(r.get('ms', 0) for r in records) / 1000:.3f}",
        )
        bad = _failed(records)
        if bad:
            failure = ET.SubElement(
                case,
                "failure",
                message=bad[0].get("message", ""),
                type=outcome(bad[0]["outcome"]).title,
            )
            failure.text = "\n\n".join(_detail(r) for r in bad)
        out = ET.SubElement(case, "system-out")
        out.text = "\n".join(_line(r) for r in records)
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="summary", value=run.summary.line())
    ET.SubElement(props, "property", name="tokens", value=run.tokens.line())
    ET.indent(suites)
    # ElementTree writes a control character as it is, which no XML reader accepts
    return printable(ET.tostring(suites, encoding="unicode", xml_declaration=True)) + "\n"


def _cases(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    cases: dict[str, list[dict[str, Any]]] = {}
    for n, r in enumerate(records, 1):
        name = r.get("test_id") or f"{r['method']} {r['host']}{r['path']} #{n}"
        cases.setdefault(name, []).append(r)
    return cases


def _failed(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if outcome(r["outcome"]).fails]


def _line(r: dict[str, Any]) -> str:
    return f"{r['method']} {r['host']}{r['path']}: {outcome(r['outcome']).label}" + (
        f" ({r['file']})" if r.get("file") else ""
    )


def _detail(r: dict[str, Any]) -> str:
    lines = [r.get("message", "")]
    lines += [
        f"  {d['path']}: asked {d['asked']}, recorded {d['recorded']}"
        for d in r.get("differences", [])
    ]
    return "\n".join(lines)


def _started(records: list[dict[str, Any]]) -> str:
    at = min((r["at"] for r in records), default=None)
    when = datetime.now(UTC) if at is None else datetime.fromtimestamp(at, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S")
