"""Normalisers: volatile values inside request strings (today's date in a system prompt, a
request id, a timestamp) replaced by a placeholder, for matching only.

``cassette_normalize`` names presets (``dates``, ``times``, ``uuids``, ``hex-ids``) and user
rules ``PATTERN=REPLACEMENT``. Matching applies them to the strings of the canonical request of
both sides, the live request and every stored recording, so both read ``Today is <date>``; the
cassette itself keeps the real text. Pure: strings and JSON values in, the same out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from proxy_addon.matching.jsonpath import map_leaves

Replacement = str | Callable[[re.Match[str]], str]
Rule = tuple[re.Pattern[str], Replacement]

_MONTH = (
    r"(?:January|February|March|April|May|June|July|August|September|October|November|"
    r"December|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec)\.?"
)
_WEEKDAY = (
    r"(?:(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday|"
    r"Mon|Tues|Tue|Wed|Thurs|Thur|Thu|Fri|Sat|Sun)\.?,?\s+)?"
)
_DAY = r"(?:3[01]|[12]\d|0?[1-9])(?:st|nd|rd|th)?"
_YEAR = r"(?:1[89]|2\d)\d\d"
# Not inside a word or a hyphenated name: "gpt-4o-2024-08-06" is a model, not a date.
_START = r"(?<![\w-])"
_END = r"(?![\w-])"

_DATES = re.compile(
    _START
    + r"(?=[\dJFMASONDTW])"  # a quick no for most places: a date starts like this
    + _WEEKDAY
    + "(?:"
    + r"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"  # 2026-11-26
    + r"|\d{4}/(?:0?[1-9]|1[0-2])/(?:0?[1-9]|[12]\d|3[01])"  # 2026/11/26
    + r"|\d{1,2}[/.]\d{1,2}[/.]"
    + _YEAR  # 11/26/2026, 26/11/2026, 26.11.2026
    + rf"|{_MONTH}\s+{_DAY},?\s+{_YEAR}"  # November 26, 2026; Nov 26th 2026
    + rf"|{_DAY}\s+(?:of\s+)?{_MONTH},?\s+{_YEAR}"  # 26 Nov 2026; 26th of November, 2026
    + rf"|{_MONTH},?\s+{_YEAR}"  # November 2026
    + ")"
    + _END,
    re.IGNORECASE,
)

_TIMESTAMP = re.compile(
    r"(?<![\w-])\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?"
    r"(?:\s?Z|\s?[+-]\d{2}(?::?\d{2})?)?(?![\w:])"
)
_TIME_OF_DAY = re.compile(
    r"(?<![\w:.])(?:[01]?\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d+)?)?(?:\s?[AaPp]\.?[Mm]\b\.?)?"
    r"(?![\w:])"
)
_EPOCH = re.compile(r"(?<![\w.])(\d{13}|\d{10}(?:\.\d{1,6})?)(?![\w.])")
# Epoch seconds (or milliseconds) are only taken for a time between 2000 and 2100.
_EPOCH_RANGE = (946_684_800, 4_102_444_800)

_UUID = re.compile(
    r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.IGNORECASE
)
_PREFIXED_ID = re.compile(
    r"\b(?:req|call|toolu|msg|resp|run|file|chatcmpl|cmpl|thread|asst|batch)[_-]"
    r"(?=[A-Za-z]*\d)[A-Za-z0-9]{8,}\b"
)  # with a digit, so "file-uploads" is left alone
_LONG_HEX = re.compile(r"\b[0-9a-fA-F]{24,}\b")


def _epoch(m: re.Match[str]) -> str:
    digits = m.group(1)
    seconds = int(digits) / 1000 if len(digits) == 13 else float(digits)
    return "<time>" if _EPOCH_RANGE[0] <= seconds < _EPOCH_RANGE[1] else digits


# Applied in this order whatever order they are given in: a timestamp holds a date.
PRESETS: dict[str, tuple[Rule, ...]] = {
    "times": ((_TIMESTAMP, "<time>"), (_TIME_OF_DAY, "<time>"), (_EPOCH, _epoch)),
    "dates": ((_DATES, "<date>"),),
    "uuids": ((_UUID, "<uuid>"),),
    "hex-ids": ((_PREFIXED_ID, "<id>"), (_LONG_HEX, "<id>")),
}
# Presets that match nothing in a string without a digit, so such strings (most of a chat
# body's) skip them after one quick scan; no preset writes a digit, so the answer holds.
_NEED_A_DIGIT = frozenset({"times", "dates"})
_DIGIT = re.compile(r"\d")


@dataclass(frozen=True)
class Normalizer:
    """Presets (by name) and user rules, compiled; presets run first, then the rules in the
    order given."""

    presets: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = ()

    @cached_property
    def _steps(self) -> tuple[tuple[bool, re.Pattern[str], Replacement], ...]:
        """(needs a digit, pattern, replacement) in the order they apply."""
        presets = tuple(
            (name in _NEED_A_DIGIT, *rule)
            for name in PRESETS
            if name in self.presets
            for rule in PRESETS[name]
        )
        return presets + tuple((False, *rule) for rule in self.rules)

    def text(self, text: str) -> str:
        """``text`` normalised; the very same object when nothing in it changed."""
        has_digit: bool | None = None
        for needs_digit, pattern, replacement in self._steps:
            if needs_digit:
                if has_digit is None:
                    has_digit = _DIGIT.search(text) is not None
                if not has_digit:
                    continue
            text = pattern.sub(replacement, text)
        return text

    def value(self, value: Any) -> Any:
        """``value`` (parsed JSON) with every string normalised, at any depth; object keys are
        left as they are. Unchanged parts are shared, not copied."""
        return map_leaves(value, self._leaf)

    def _leaf(self, value: Any) -> Any:
        return self.text(value) if isinstance(value, str) else value

    def with_presets(self, names: Iterable[str]) -> Normalizer:
        return Normalizer(tuple(dict.fromkeys((*self.presets, *names))), self.rules)


def _separator(rule: str) -> int:
    """Where PATTERN ends in ``PATTERN=REPLACEMENT``: the first ``=`` that is neither escaped
    (``\\=`` is a literal ``=`` in a pattern) nor part of ``(?=``, ``(?<=`` or ``(?P=``."""
    i = 0
    while i < len(rule):
        if rule[i] == "\\":
            i += 2
            continue
        if rule[i] == "=" and not rule[:i].endswith(("(?", "(?<", "(?P")):
            return i
        i += 1
    return -1


def parse_rule(rule: str) -> Rule:
    """``PATTERN=REPLACEMENT`` compiled; ``ValueError`` naming the rule when it is not one."""
    at = _separator(rule)
    if at <= 0:
        raise ValueError(
            f"{rule!r} is neither a preset ({', '.join(PRESETS)}) nor a rule "
            "PATTERN=REPLACEMENT, e.g. 'Session \\d+=Session <n>'"
        )
    pattern, replacement = rule[:at], rule[at + 1 :]
    try:
        compiled = re.compile(pattern)
    except re.error as e:
        raise ValueError(f"{rule!r}: {pattern!r} is not a valid regular expression ({e})") from None
    try:
        compiled.sub(replacement, "")  # checks the replacement's escapes and group references
    except (re.error, IndexError) as e:
        raise ValueError(f"{rule!r}: {replacement!r} is not a valid replacement ({e})") from None
    return compiled, replacement


def compile_rules(values: Sequence[str]) -> Normalizer | None:
    """The normaliser of the option's values, or None when there are none.

    Each value is either preset names separated by commas (``dates,uuids``) or one rule
    ``PATTERN=REPLACEMENT`` (a pattern may hold commas, so a rule takes a value of its own)."""
    presets: list[str] = []
    rules: list[Rule] = []
    for value in values:
        names = [n.strip() for n in value.split(",") if n.strip()]
        if names and all(n in PRESETS for n in names):
            presets += names
        elif names and names[0] in PRESETS:
            raise ValueError(
                f"{value!r}: give presets and each PATTERN=REPLACEMENT rule in "
                "separate values (the option given once for each)"
            )
        elif value.strip():
            rules.append(parse_rule(value))
    if not presets and not rules:
        return None
    return Normalizer(tuple(dict.fromkeys(presets)), tuple(rules))
