"""Volatile values found, not guessed: two recordings of the same tests (two runs, two folders, a
git revision and the working tree) are paired file by file, the JSON paths and value shapes
where their requests differ are named, and the ``cassette_normalize`` / ``cassette_ignore``
options that would make each pair match are proposed, then checked on the pairs themselves.

A value is taken by the presets that replace the parts where the two differ, then, for what they
leave, a rule made from the text both share just before it (``(?<=Session )\\d+=<n>``; rules
apply after the presets, as in the proxy), or, for a value that is one random-looking token
(``u8Fj3kL0``), by leaving its path out of matching. Prose that differs in wording, a model
name, a number a test chose are not volatile values: nothing is proposed for them. Nothing is
rewritten: the user applies the options. Pure: requests in, proposals out.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from proxy_addon.matching import volatile
from proxy_addon.matching.canonical import CanonicalRequest, Request, Rules, canonicalize
from proxy_addon.matching.jsonpath import parse_path
from proxy_addon.matching.normalize import Normalizer, compile_rules, parse_rule, shown
from proxy_addon.matching.presets import PRESETS, random_looking
from proxy_addon.model import RecordedRequest
from proxy_addon.store.layout import model_of

VALUE_LIMIT = 80  # characters of a value shown
_EVERY_PRESET = Rules(normalize=Normalizer(tuple(PRESETS)))  # pairs recordings alike
# what a token that differs is, what a rule matches it with and replaces it by, and its name
_SHAPES = (
    (re.compile(r"\d+"), r"\d+", "<n>", "digits"),
    (re.compile(r"(?=.*\d)[0-9a-f]+"), "[0-9a-f]+", "<hex>", "hex digits"),
    (re.compile(r"(?=.*\d)[0-9A-F]+"), "[0-9A-F]+", "<hex>", "hex digits"),
    (re.compile(r"(?=.*\d)[A-Za-z0-9]+"), "[A-Za-z0-9]+", "<id>", "letters and digits"),
)


@dataclass(frozen=True, slots=True)
class Recorded:
    """One recording of a run: its file (relative to its directory) and its request."""

    name: str
    request: RecordedRequest


@dataclass(slots=True)
class Difference:
    """Where a pair's requests differ: the path, each value, its shape, and the options that
    make them alike, as (``preset``/``rule``/``ignore``, value) (none: not a volatile value)."""

    path: str
    a: str
    b: str
    shape: str
    fixes: list[tuple[str, str]] = field(default_factory=list)
    # the volatile pieces the fixes replace: (form, in a, in b)
    values: list[tuple[str, str, str]] = field(default_factory=list)

    def fix(self) -> str:
        """The options as a reader sees them: ``preset times,uuids``, ``rule …``, ``ignore …``."""
        kinds = dict.fromkeys(kind for kind, _ in self.fixes)
        return "; ".join(
            f"{kind} " + ",".join(v for k, v in self.fixes if k == kind)
            if kind != "rule"
            else "; ".join(f"rule {v}" for k, v in self.fixes if k == kind)
            for kind in kinds
        )


@dataclass(slots=True)
class Pair:
    a: str
    b: str
    differences: list[Difference]
    matches: bool = False  # once the proposed options are applied


@dataclass(slots=True)
class Proposal:
    """What the two runs hold, and the options proposed."""

    pairs: list[Pair] = field(default_factory=list)
    same: int = 0  # recordings identical in both
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)
    presets: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    ignore: list[str] = field(default_factory=list)

    def options(self) -> list[str]:
        """The proposal as ``--set`` values (a rule takes a value of its own)."""
        out = [f"cassette_normalize={','.join(self.presets)}"] if self.presets else []
        out += [f"cassette_normalize={rule}" for rule in self.rules]
        return out + ([f"cassette_ignore={','.join(self.ignore)}"] if self.ignore else [])

    def rules_applied(self) -> Rules:
        """The matching rules these options make."""
        values = [",".join(self.presets)] if self.presets else []
        return Rules(
            tuple(parse_path(p) for p in self.ignore), normalize=compile_rules(values + self.rules)
        )

    def take(self, fixes: list[tuple[str, str]]) -> None:
        chosen = {"preset": self.presets, "rule": self.rules, "ignore": self.ignore}
        for kind, value in fixes:
            if value not in chosen[kind]:
                chosen[kind].append(value)


def _canonical(request: RecordedRequest, rules: Rules | None = None) -> CanonicalRequest:
    return canonicalize(Request.recorded(request), rules or Rules())


def pair_up(a: list[Recorded], b: list[Recorded]) -> Proposal:
    """Pair each recording of run ``a`` with the one of run ``b`` made by the same test for the
    same endpoint and model: identical requests are counted, not compared; then those alike
    once every preset is applied, in order; the rest by how few paths their requests differ at
    (each distance computed once)."""
    proposal = Proposal()
    canon = {id(r): _canonical(r.request) for r in (*a, *b)}
    alike = {id(r): _canonical(r.request, _EVERY_PRESET).key() for r in (*a, *b)}
    groups: dict[tuple[Any, ...], tuple[list[Recorded], list[Recorded]]] = defaultdict(
        lambda: ([], [])
    )
    for side, records in enumerate((a, b)):
        for r in records:
            c = canon[id(r)]
            folder = r.name.rpartition("/")[0]
            groups[(folder, c.method, c.host, c.path, model_of(r.request))][side].append(r)
    for left, right in groups.values():
        in_both = {canon[id(r)].key() for r in left} & {canon[id(r)].key() for r in right}
        proposal.same += sum(1 for r in left if canon[id(r)].key() in in_both)
        left = [r for r in left if canon[id(r)].key() not in in_both]
        right = [r for r in right if canon[id(r)].key() not in in_both]
        waiting: dict[str, list[Recorded]] = defaultdict(list)
        for r in right:
            waiting[alike[id(r)]].append(r)
        rest = []
        for r in left:
            match = waiting.get(alike[id(r)])
            if match:
                other = match.pop(0)
                right.remove(other)
                proposal.pairs.append(Pair(r.name, other.name, []))
            else:
                rest.append(r)
        distances = sorted(
            (len(_diffs(canon[id(x)], canon[id(y)])), i, j)
            for i, x in enumerate(rest)
            for j, y in enumerate(right)
        )
        used_left: set[int] = set()
        used_right: set[int] = set()
        for _, i, j in distances:
            if i not in used_left and j not in used_right:
                used_left.add(i)
                used_right.add(j)
                proposal.pairs.append(Pair(rest[i].name, right[j].name, []))
        proposal.only_a += [r.name for i, r in enumerate(rest) if i not in used_left]
        proposal.only_b += [r.name for j, r in enumerate(right) if j not in used_right]
    proposal.pairs.sort(key=lambda p: p.a)
    return proposal


def _diffs(x: CanonicalRequest, y: CanonicalRequest) -> list[tuple[str, str | None, Any, Any]]:
    """(path, key, value in x, value in y) where two requests differ."""
    out: list[tuple[str, str | None, Any, Any]] = [
        (part, None, getattr(x, part), getattr(y, part))
        for part in ("method", "host", "path")
        if getattr(x, part) != getattr(y, part)
    ]
    xq: dict[str, list[str]] = defaultdict(list)
    yq: dict[str, list[str]] = defaultdict(list)
    for k, v in x.query:
        xq[k].append(v)
    for k, v in y.query:
        yq[k].append(v)
    for k in sorted(set(xq) | set(yq)):
        if xq[k] != yq[k]:
            out.append(
                (
                    f"query.{k}",
                    k,
                    " ".join(xq[k]) if k in xq else volatile.MISSING,
                    " ".join(yq[k]) if k in yq else volatile.MISSING,
                )
            )
    out += [
        (volatile.shown_path(p), k, a, b) for p, k, a, b in volatile.differences(x.body, y.body)
    ]
    return out


def propose(a: list[Recorded], b: list[Recorded]) -> Proposal:
    """Pair the two runs, name every difference with the options that take it, and check the
    options on every pair."""
    proposal = pair_up(a, b)
    in_a, in_b = {r.name: r.request for r in a}, {r.name: r.request for r in b}
    for pair in proposal.pairs:
        x, y = _canonical(in_a[pair.a]), _canonical(in_b[pair.b])
        pair.differences = [_difference(*d) for d in _diffs(x, y)]
        for d in pair.differences:
            proposal.take(d.fixes)
    proposal.presets = [name for name in PRESETS if name in proposal.presets]
    rules = proposal.rules_applied()
    for pair in proposal.pairs:
        x, y = _canonical(in_a[pair.a], rules), _canonical(in_b[pair.b], rules)
        pair.matches = x.key() == y.key()
    return proposal


def _difference(path: str, key: str | None, x: Any, y: Any) -> Difference:
    """One difference, its shape and the options that take it."""
    here = Difference(path, _show(x), _show(y), _shape_of(x))
    if path in ("method", "host", "path"):
        here.shape = "the endpoint, never normalised"
        return here
    if x is volatile.MISSING or y is volatile.MISSING:
        here.shape = "only in b" if x is volatile.MISSING else "only in a"
        if _ignorable(path):
            here.fixes = [("ignore", path)]
        return here
    presets = _useful_presets(x, y, key)
    normalizer = _presets(presets)
    x_left, y_left = (_normalised(normalizer, v, key) for v in (x, y))
    if presets and x_left == y_left:
        here.fixes = [("preset", name) for name in presets]
    elif isinstance(x_left, str) and isinstance(y_left, str):
        rules = _rules_for(x_left, y_left)  # on what the presets left: rules apply after them
        if rules is not None:
            here.fixes = [("preset", name) for name in presets] + [("rule", r) for r in rules]
            normalizer = Normalizer(presets, tuple(parse_rule(r) for r in rules))
    if here.fixes:
        here.values = [
            (h.form, _clip(h.asked), _clip(h.recorded))
            for h in volatile.hidden_values(path, key, x, y, normalizer)
        ]
        here.shape = ", ".join(dict.fromkeys(form for form, _, _ in here.values))
    elif _random_token(x) and _random_token(y) and _ignorable(path):
        here.fixes = [("ignore", path)]
    return here


def _clip(text: str) -> str:
    return text if len(text) <= VALUE_LIMIT else text[:VALUE_LIMIT] + "..."


def _show(value: Any) -> str:
    if value is volatile.MISSING:
        return "(none)"
    return _clip(shown(value) if not isinstance(value, dict | list) else json.dumps(value))


def _shape_of(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "true/false/null"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, dict | list):
        return "an object" if isinstance(value, dict) else "a list"
    if value is volatile.MISSING:
        return "missing"
    for pattern, _, _, name in _SHAPES:
        if pattern.fullmatch(value):
            return f"{name} ({len(value)})"
    return "text"


def _random_token(value: Any) -> bool:
    """A string that is one random-looking token (``u8Fj3kL0``): a value made up per run, not a
    word, a model name or a number a test chose."""
    return isinstance(value, str) and value.isalnum() and random_looking(value)


def _ignorable(path: str) -> bool:
    """Whether ``cassette_ignore`` can name this path (a body path, not a list item added)."""
    if path.startswith("query.") or path == "(body)":
        return False
    try:
        parse_path(path)
    except ValueError:
        return False
    return True


@functools.cache
def _presets(names: tuple[str, ...]) -> Normalizer:
    """A normaliser of these presets, made (and its RE2 set compiled) once."""
    return Normalizer(names)


def _useful_presets(x: Any, y: Any, key: str | None) -> tuple[str, ...]:
    """The presets that replace a part where ``x`` and ``y`` differ."""
    return tuple(
        name
        for name in PRESETS
        if [r.original for r in _presets((name,)).replaced(x, key)]
        != [r.original for r in _presets((name,)).replaced(y, key)]
    )


def _normalised(normalizer: Normalizer, value: Any, key: str | None) -> Any:
    """``value`` normalised as its key makes it."""
    return normalizer.value({key: value})[key] if key is not None else normalizer.value(value)


def _rules_for(x: str, y: str) -> list[str] | None:
    """Rules that make ``x`` and ``y`` read alike: for each token where they differ (a run of
    digits, hex digits, or letters and digits), the text both share just before it as a
    look-behind, so only that token is replaced. None when a token has no such shape or the
    rules do not make them alike."""
    rules: list[str] = []
    matcher = difflib.SequenceMatcher(None, x, y, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        i1, i2 = _token(x, i1, i2)
        j1, j2 = _token(y, j1, j2)
        shape = next(
            (s for s in _SHAPES if s[0].fullmatch(x[i1:i2]) and s[0].fullmatch(y[j1:j2])), None
        )
        before = re.search(r"\S*\s*$", x[:i1])
        if shape is None or before is None or not y[:j1].endswith(before.group(0) or "\0"):
            return None
        context = re.escape(before.group(0)).replace("=", r"\=")
        rule = f"(?<={context}){shape[1]}={shape[2]}"
        if rule not in rules:
            rules.append(rule)
    normalizer = compile_rules(rules)
    if not rules or normalizer is None or normalizer.text(x) != normalizer.text(y):
        return None
    return rules


def _token(text: str, start: int, end: int) -> tuple[int, int]:
    """The span widened to the whole run of letters and digits it touches."""
    while start > 0 and text[start - 1].isalnum():
        start -= 1
    while end < len(text) and text[end].isalnum():
        end += 1
    return start, end
