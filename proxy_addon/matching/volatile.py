"""What a normaliser hid: the values it replaced in one request, and, between a request and a
recording that match only once both are normalised, each value as asked and as recorded.

Used by the summary of a hit that matched only after normalising, by the choice among several
recordings that normalise alike (the nearest original wins), and by ``cassette explain``. Both
sides are compared in their comparable form (``canonical``), whose secrets are already left
out or replaced, so what is shown here is what a summary may show. Pure; iterative, so a deep
body cannot overflow the stack.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from proxy_addon.matching.canonical import CanonicalRequest
from proxy_addon.matching.jsonpath import format_path
from proxy_addon.matching.normalize import Normalizer, shown

Segments = tuple[str | int, ...]
MISSING = object()  # a key or item one side has and the other has not


@dataclass(frozen=True, slots=True)
class Replaced:
    """A value a normaliser replaced in one request: where, what it was, what it became, and
    the form that replaced it."""

    path: str
    original: str
    placeholder: str
    form: str


@dataclass(frozen=True, slots=True)
class Hidden:
    """A value that differs between a request and a recording but is the same once both are
    normalised: where, as asked, as recorded, and its form."""

    path: str
    asked: str
    recorded: str
    form: str


def leaves(value: Any) -> Iterator[tuple[Segments, str | None, Any]]:
    """(path, the key holding it, leaf) of every value that is not an object or a list."""
    stack: list[tuple[Segments, str | None, Any]] = [((), None, value)]
    while stack:
        path, key, item = stack.pop()
        if isinstance(item, dict):
            stack += [((*path, k), k, v) for k, v in reversed(item.items())]
        elif isinstance(item, list):
            stack += [((*path, i), key, v) for i, v in reversed(list(enumerate(item)))]
        else:
            yield path, key, item


def differences(a: Any, b: Any) -> Iterator[tuple[Segments, str | None, Any, Any]]:
    """(path, key, value in a, value in b) wherever two JSON values differ: leaves that differ,
    and where the structure does (a key or item only one side has is ``MISSING`` on the other;
    a value of another type is given whole)."""
    stack: list[tuple[Segments, str | None, Any, Any]] = [((), None, a, b)]
    while stack:
        path, key, x, y = stack.pop()
        if isinstance(x, dict) and isinstance(y, dict):
            for k in reversed(sorted(set(x) | set(y), key=str)):
                stack.append(((*path, k), k, x.get(k, MISSING), y.get(k, MISSING)))
        elif isinstance(x, list) and isinstance(y, list):
            for i in reversed(range(max(len(x), len(y)))):
                stack.append(
                    (
                        (*path, i),
                        key,
                        x[i] if i < len(x) else MISSING,
                        y[i] if i < len(y) else MISSING,
                    )
                )
        elif x != y or type(x) is not type(y):
            yield path, key, x, y


def shown_path(path: Segments) -> str:
    return format_path(path) or "(body)"


def replacements(request: CanonicalRequest, normalizer: Normalizer) -> list[Replaced]:
    """Every value ``normalizer`` replaces in a request (given before the normaliser): in its
    query values, then its JSON body."""
    out = [
        Replaced(f"query.{k}", r.original, r.placeholder, r.form)
        for k, v in request.query
        for r in normalizer.replaced(v, k)
    ]
    if not _is_data(request.body):
        return out
    for path, key, leaf in leaves(request.body):
        out += [
            Replaced(shown_path(path), r.original, r.placeholder, r.form)
            for r in normalizer.replaced(leaf, key)
        ]
    return out


def hidden(
    asked: CanonicalRequest, recorded: CanonicalRequest, normalizer: Normalizer
) -> list[Hidden]:
    """The values that differ between a request and a recording (both before the normaliser)
    which ``normalizer`` replaces alike: each as asked and as recorded, in order."""
    out: list[Hidden] = []
    names = sorted({k for k, _ in asked.query} | {k for k, _ in recorded.query})
    for name in names:
        mine = [v for k, v in asked.query if k == name]
        theirs = [v for k, v in recorded.query if k == name]
        for x, y in zip(mine, theirs):
            if x != y:
                out += hidden_values(f"query.{name}", name, x, y, normalizer)
    if _is_data(asked.body) and _is_data(recorded.body):
        for path, key, x, y in differences(asked.body, recorded.body):
            if x is not MISSING and y is not MISSING:
                out += hidden_values(shown_path(path), key, x, y, normalizer)
    return out


def _is_data(body: Any) -> bool:
    """Whether a comparable body is JSON data (not a digest, form or upload)."""
    return not (isinstance(body, dict) and len(body) == 1 and next(iter(body)).startswith("$"))


def hidden_values(
    path: str, key: str | None, x: Any, y: Any, normalizer: Normalizer
) -> list[Hidden]:
    """One differing leaf (``key`` holds it): the pieces ``normalizer`` replaces in each, paired
    in order where they differ, or the whole values when the pieces do not line up."""
    mine, theirs = normalizer.replaced(x, key), normalizer.replaced(y, key)
    if len(mine) != len(theirs) or not mine:
        return [Hidden(path, shown(x), shown(y), "")]
    return [
        Hidden(path, a.original, b.original, a.form)
        for a, b in zip(mine, theirs)
        if a.original != b.original
    ]


def distance(values: list[Hidden]) -> tuple[int, float]:
    """How far a recording's originals are from a request's: how many values differ, then how
    much of their text (0 to 1 each)."""
    return len(values), sum(
        1 - difflib.SequenceMatcher(None, h.asked, h.recorded).ratio() for h in values
    )
