"""Normalisers: volatile values inside request strings (today's date in a system prompt, a
request id, a timestamp) replaced by a placeholder, for matching only.

``cassette_normalize`` names presets (``dates``, ``times``, ``uuids``, ``hex-ids``: their forms
are in ``presets.py``) and user rules ``PATTERN=REPLACEMENT``. Matching applies them to the
strings of the canonical request of both sides, the live request and every stored recording,
so both read ``Today is <date>``; the cassette itself keeps the real text. A value is seen with
the JSON key (or query parameter) that holds it, so ``"created_at": 1764142239`` is a time and
``"order": 1764142239`` is not. ``replaced`` says what was replaced and as what, for the
summary and ``cassette explain``. Pure: strings and JSON values in, the same out.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import re2  # type: ignore[import-untyped]

from proxy_addon.matching.jsonpath import map_leaves
from proxy_addon.matching.presets import DIGIT, PRESETS, Check, Form, Preset

Rule = tuple[re.Pattern[str], str]
WIDEN_WINDOW = 32  # characters before a placeholder a widening form looks at
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.never_capture = True


@dataclass(frozen=True, slots=True)
class Replacement:
    """One value a normaliser replaced: the text as it was, what it became, and its form (the
    preset's form, or the user rule)."""

    original: str
    placeholder: str
    form: str


@dataclass(frozen=True, slots=True)
class _Step:
    """One form of a preset, or one user rule, as it is applied."""

    pattern: re.Pattern[str]
    check: Check | None  # what a match must pass to be replaced
    replacement: str  # the preset's placeholder, or the rule's replacement template
    label: str  # what it replaces, for reports: "dates: ISO date", "rule Session \\d+"
    needs_digit: bool  # a preset's form: a string without a digit skips it
    prefilter: str | None = None  # the form's RE2 prefilter (presets.Form)
    number: int | None = None  # the prefilter's number in the normaliser's RE2 set
    widens: bool = False  # it widens a placeholder, whose form it keeps (presets.Form)

    def substitute(self, text: str) -> str:
        """``text`` with this step applied; the very same object when nothing changed."""
        if self.check is None and not self.widens:
            return self.pattern.sub(self.replacement, text)
        found = self.matches(text)
        if not found:
            return text
        out, at = [], 0
        for start, end, new in found:
            out += [text[at:start], new]
            at = end
        return "".join(out) + text[at:]

    def matches(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, what it becomes) of each match that passes its check."""
        if self.widens:
            return self._widened(text)
        return [
            (m.start(), m.end(), new)
            for m in self.pattern.finditer(text)
            if (new := self.result(m)) != m.group(0)
        ]

    def _widened(self, text: str) -> list[tuple[int, int, str]]:
        """Each placeholder with the text just before it that the pattern (anchored at its
        end) takes in."""
        out = []
        at = text.find(self.replacement)
        while at >= 0:
            m = self.pattern.search(text, max(0, at - WIDEN_WINDOW), at)
            end = at + len(self.replacement)
            if m is not None and (self.check is None or self.check(m)):
                out.append((m.start(), end, self.replacement))
            at = text.find(self.replacement, end)
        return out

    def result(self, m: re.Match[str]) -> str:
        """What one match becomes (itself when its check fails)."""
        if self.check is not None and not self.check(m):
            return m.group(0)
        return self.replacement if self.needs_digit else m.expand(self.replacement)


@dataclass(frozen=True)
class Normalizer:
    """Presets (by name) and user rules, compiled; presets run first, then the rules in the
    order given."""

    presets: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = ()

    @cached_property
    def _steps(self) -> tuple[_Step, ...]:
        """Every form and rule, in the order they apply; a form's prefilter is numbered as in
        ``_prefilter_set``."""
        forms = _forms_of(frozenset(self.presets))
        numbers = iter(range(len(forms)))
        return tuple(
            _Step(
                f.pattern,
                f.check,
                p.placeholder,
                f"{p.name}: {f.label}",
                True,
                f.prefilter,
                None if f.prefilter is None else next(numbers),
                f.widens,
            )
            for p, f in forms
        ) + tuple(
            _Step(pattern, None, replacement, f"rule {pattern.pattern}", False)
            for pattern, replacement in self.rules
        )

    def _candidates(self, text: str) -> set[int]:
        """The numbers of the forms that can match somewhere in ``text`` (a lone surrogate, as
        a query decoded with ``surrogateescape`` may hold, is passed as its bytes: no form
        matches it)."""
        if not self.presets:
            return set()
        found = _prefilter_set(frozenset(self.presets))
        return set(found.Match(text.encode("utf-8", "surrogatepass")) or ())

    @staticmethod
    def _runs(step: _Step, candidates: set[int]) -> bool:
        return step.number is None or step.number in candidates

    @cached_property
    def _keyed(self) -> tuple[tuple[Callable[[Any, str], bool], str, str], ...]:
        """(check, placeholder, preset name) of the chosen presets that judge a whole value by
        the key that holds it."""
        return tuple(
            (keyed, PRESETS[name].placeholder, name)
            for name in PRESETS
            if name in self.presets and (keyed := PRESETS[name].keyed) is not None
        )

    def _by_key(self, value: Any, key: str | None) -> tuple[str, str] | None:
        """(placeholder, preset name) when the key makes the whole value volatile."""
        if key is not None:
            for check, placeholder, name in self._keyed:
                if check(value, key):
                    return placeholder, name
        return None

    def text(self, text: str, key: str | None = None) -> str:
        """``text`` normalised (``key``: the JSON key or query parameter holding it); the very
        same object when nothing in it changed."""
        if self._keyed and key is not None:
            whole = self._by_key(text, key)
            if whole is not None:
                return whole[0]
        candidates: set[int] | None = None
        for step in self._steps:
            if step.needs_digit:
                if candidates is None:  # one quick scan, then one RE2 scan, for all forms
                    candidates = self._candidates(text) if DIGIT.search(text) else set()
                if not candidates or not self._runs(step, candidates):
                    continue
            text = step.substitute(text)
        return text

    def value(self, value: Any) -> Any:
        """``value`` (parsed JSON) with every string normalised, and every number a time key
        holds, at any depth; object keys are left as they are. Unchanged parts are shared."""
        return map_leaves(value, self._leaf)

    def _leaf(self, value: Any, key: str | None) -> Any:
        if isinstance(value, str):
            return self.text(value, key)
        if self._keyed and key is not None and isinstance(value, int | float):
            whole = self._by_key(value, key)
            if whole is not None:
                return whole[0]
        return value

    def replaced(self, value: Any, key: str | None = None) -> list[Replacement]:
        """What normalising ``value`` replaces, in the order it stands in the text: each piece
        of the original and what it became. Slower than ``text``: for reports only."""
        whole = self._by_key(value, key) if self._keyed else None
        if whole is not None:
            return [Replacement(shown(value), whole[0], f"{whole[1]}: by its key {key!r}")]
        if not isinstance(value, str):
            return []
        pieces = [_Piece(value, value, None)]
        candidates = self._candidates(value) if DIGIT.search(value) else set()
        for step in self._steps:
            if not step.needs_digit or (candidates and self._runs(step, candidates)):
                pieces = _track(pieces, step)
        return [Replacement(p.original, p.current, p.label) for p in pieces if p.label]

    def with_presets(self, names: Iterable[str]) -> Normalizer:
        return Normalizer(tuple(dict.fromkeys((*self.presets, *names))), self.rules)

    def describe(self) -> str:
        """The option's values that make this normaliser: the presets, then each rule."""
        presets = [",".join(n for n in PRESETS if n in self.presets)] if self.presets else []
        return " ".join(presets + [f"{p.pattern}={r}" for p, r in self.rules])


@functools.cache
def _forms_of(presets: frozenset[str]) -> tuple[tuple[Preset, Form], ...]:
    """The forms of these presets, in the order they apply."""
    return tuple((p, f) for p in PRESETS.values() if p.name in presets for f in p.forms)


@functools.cache
def _prefilter_set(presets: frozenset[str]) -> Any:
    """One RE2 set of these presets' prefilters (``presets.Form``), numbered in the order the
    forms apply: a single linear scan says which forms can match in a string. Compiled once
    for each choice of presets (it takes milliseconds), whichever normaliser asks."""
    found = re2.Set.SearchSet(_RE2_OPTIONS)
    for number, (_, form) in enumerate(f for f in _forms_of(presets) if f[1].prefilter):
        if found.Add(form.prefilter) != number:
            raise AssertionError(f"{form.label}: its prefilter is not number {number}")
    found.Compile()
    return found


def shown(value: Any) -> str:
    """A JSON leaf as a report shows it: a string as it is, anything else as JSON writes it."""
    return value if isinstance(value, str) else json.dumps(value)


@dataclass(frozen=True, slots=True)
class _Piece:
    """A stretch of a string being normalised: as it reads now, as it was, and the form that
    replaced it (None: untouched so far)."""

    current: str
    original: str
    label: str | None


def _joined(pieces: list[_Piece]) -> str:
    return "".join(p.current for p in pieces)


def _track(pieces: list[_Piece], step: _Step) -> list[_Piece]:
    """``pieces`` after one step: each replacement becomes a piece holding the original text
    it covers (a replacement that a later match touches is taken whole into it; a step that
    widens a placeholder keeps that placeholder's form)."""
    text = _joined(pieces)
    matches = step.matches(text)
    if not matches:
        return pieces
    cuts = {at for start, end, _ in matches for at in (start, end)}
    placed: list[tuple[int, _Piece]] = []  # untouched text cut where matches start and end
    at = 0
    for piece in pieces:
        end = at + len(piece.current)
        if piece.label is None:
            bounds = [at, *sorted(c for c in cuts if at < c < end), end]
            placed += [(a, _Piece(text[a:b], text[a:b], None)) for a, b in zip(bounds, bounds[1:])]
        else:
            placed.append((at, piece))
        at = end
    out: list[_Piece] = []
    k = 0
    for start, end, new in matches:
        while k < len(placed) and placed[k][0] + len(placed[k][1].current) <= start:
            out.append(placed[k][1])
            k += 1
        covered = []
        while k < len(placed) and placed[k][0] < end:
            covered.append(placed[k])
            k += 1
        first = covered[0][0] if covered else start
        last = covered[-1][0] + len(covered[-1][1].current) if covered else end
        widened = [p.label for _, p in covered if p.label] if step.widens else []
        out.append(
            _Piece(
                text[first:start] + new + text[end:last],
                "".join(p.original for _, p in covered),
                widened[0] if widened else step.label,
            )
        )
    out += [p for _, p in placed[k:]]
    return out


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
