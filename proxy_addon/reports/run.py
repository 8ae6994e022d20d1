"""The run as every report shows it: built once from the proxy's summary (its counters and its
per-request records), the mode, and the prices the user gave; the renderers only read it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy_addon.reports.tokens import Price, cost
from proxy_addon.summary import Summary


@dataclass(frozen=True)
class Outcome:
    """What became of a request: its words, and whether it fails the run (then each such
    request is an annotation, a JUnit failure and a row of the Markdown's table)."""

    label: str
    fails: bool = False
    title: str = ""  # the annotation's and the JUnit failure's title


# Every outcome a request record can have (``record.request_record``); a new one is one line.
OUTCOMES: dict[str, Outcome] = {
    "hit": Outcome("answered from a recording"),
    "recorded": Outcome("forwarded and recorded"),
    "incidental": Outcome("not under test (incidental), never recorded"),
    "miss": Outcome("no recording matched", fails=True, title="cassette miss"),
    "stale": Outcome("refused as stale", fails=True, title="cassette stale"),
}
OTHER = Outcome("other")  # an outcome this version does not know (a newer proxy's summary)


def outcome(name: str) -> Outcome:
    return OUTCOMES.get(name, OTHER)


def dollars(amount: float) -> str:
    """Cents for an amount of a cent or more; two significant digits below (``$0.00015``)."""
    return f"${amount:,.2f}" if amount >= 0.01 or amount == 0 else f"${amount:.2g}"


@dataclass
class Tokens:
    """Tokens served from cassettes instead of a provider, and what they would have cost."""

    input: int = 0
    output: int = 0
    by_model: dict[str, tuple[int, int]] = field(default_factory=dict)
    cost: float | None = None  # dollars, when prices were given
    unpriced: list[str] = field(default_factory=list)  # models the price file does not name

    def line(self) -> str:
        text = (
            f"cassette tokens: {self.input} input and {self.output} output tokens served "
            "from cassettes instead of a provider"
        )
        if self.cost is not None:
            text += f" ({dollars(self.cost)} at the given prices"
            text += f"; no price for {', '.join(self.unpriced)})" if self.unpriced else ")"
        return text


@dataclass
class RunReport:
    """One run: its mode, its summary, and its requests (as many as the summary kept)."""

    mode: str
    summary: Summary
    requests: list[dict[str, Any]]
    tokens: Tokens
    base: Path | None = None  # paths under it are shown relative to it (the working directory)

    def shown(self, path: str) -> str:
        """A file's path as the reports show it: relative to ``base`` when under it."""
        if self.base is not None and Path(path).is_relative_to(self.base):
            return str(Path(path).relative_to(self.base))
        return path

    @property
    def failed(self) -> bool:
        return self.summary.failed

    @property
    def problems(self) -> list[dict[str, Any]]:
        """The requests that fail the run, in the order they came."""
        return [r for r in self.requests if outcome(r["outcome"]).fails]

    @property
    def requests_not_listed(self) -> int:
        return max(0, self.summary.requests - len(self.requests))

    def verdict(self) -> str:
        """One line: passed or failed (``Summary.failed``), and the counts."""
        return f"cassette {self.mode} {'failed' if self.failed else 'passed'}: {self.counts()}"

    def counts(self) -> str:
        """The summary line's counts, worded once (``Summary.line``)."""
        return self.summary.line().removeprefix("cassette summary: ")


def build(
    summary: Summary,
    mode: str,
    prices: Mapping[str, Price] | None = None,
    base: Path | None = None,
) -> RunReport:
    by_model: dict[str, tuple[int, int]] = {}
    for r in summary.request_log:
        if "input_tokens" in r:
            model = r.get("model") or "(no model named)"
            inp, out = by_model.get(model, (0, 0))
            by_model[model] = (inp + r["input_tokens"], out + r["output_tokens"])
    tokens = Tokens(summary.input_tokens_served, summary.output_tokens_served, by_model)
    if prices is not None:
        tokens.cost = cost(prices, by_model)
        tokens.unpriced = sorted(m for m in by_model if m not in prices)
    return RunReport(mode, summary, list(summary.request_log), tokens, base)
