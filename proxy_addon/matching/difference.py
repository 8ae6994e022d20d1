"""Why a request missed: the JSON paths where it differs from a recorded request, and the
recording nearest to it (same model, fewest differing places, closest values). Iterative, so
arbitrarily deep bodies cannot overflow the stack."""

from __future__ import annotations

import os
from collections.abc import Iterable
from difflib import SequenceMatcher
from typing import Any

from proxy_addon.matching.canonical import CanonicalRequest


def diff_paths(a: Any, b: Any, limit: int = 20) -> list[str]:
    """JSON paths (``messages[0].content``) where two values differ, breadth-first, at most
    ``limit`` of them. Iterative, so arbitrarily deep bodies cannot overflow the stack."""
    out: list[str] = []
    stack: list[tuple[str, Any, Any]] = [("", a, b)]
    while stack and len(out) < limit:
        path, x, y = stack.pop(0)
        if isinstance(x, dict) and isinstance(y, dict):
            for k in sorted(set(x) | set(y), key=str):
                sub = f"{path}.{k}" if path else str(k)
                if k not in x or k not in y:
                    out.append(sub)
                elif x[k] != y[k]:
                    stack.append((sub, x[k], y[k]))
        elif isinstance(x, list) and isinstance(y, list):
            for i in range(max(len(x), len(y))):
                sub = f"{path}[{i}]"
                if i >= len(x) or i >= len(y):
                    out.append(sub)
                elif x[i] != y[i]:
                    stack.append((sub, x[i], y[i]))
        elif x != y or type(x) is not type(y):
            out.append(path or "(body)")
    return out[:limit]


def request_diff(asked: CanonicalRequest, recorded: CanonicalRequest) -> list[str]:
    """Where a recorded request differs from the one asked, as readable paths."""
    diffs: list[str] = []
    if asked.method != recorded.method:
        diffs.append("method")
    if recorded.host and asked.host != recorded.host:
        diffs.append("host")
    if asked.path != recorded.path:
        diffs.append("path")
    if asked.query != recorded.query:
        keys = {k for k, _ in asked.query} | {k for k, _ in recorded.query}
        diffs.extend(
            f"query.{k}"
            for k in sorted(keys)
            if [v for n, v in asked.query if n == k] != [v for n, v in recorded.query if n == k]
        )
    diffs.extend(diff_paths(asked.body, recorded.body))
    return diffs


# At most this many places of two requests are compared to rank a recording (only a miss pays
# for it); a recording differing in more is as far as any.
MAX_PLACES = 200
# Characters of each differing middle compared for text similarity: bounded, so that a miss
# against 200 recordings of a long prompt stays within milliseconds.
TEXT_WINDOW = 400
_MISSING = object()  # a key or position one side lacks


def closest(
    asked: CanonicalRequest, candidates: Iterable[tuple[Any, CanonicalRequest]]
) -> tuple[Any, list[str]] | None:
    """The candidate nearest to ``asked``, and where it differs (``request_diff``): one of the
    same model first, then the fewest places that differ (a list of strings, such as an
    embeddings input, is one place), then the closest values there (text similarity of the
    differing strings; a list of strings compared as one text). Earlier candidates win ties."""
    ranked = [
        (_model(asked) != _model(canon), len(_places(asked, canon)), n, item, canon)
        for n, (item, canon) in enumerate(candidates)
    ]
    if not ranked:
        return None
    best = min(r[:2] for r in ranked)
    nearest = min(
        (r for r in ranked if r[:2] == best),
        key=lambda r: (sum(_distance(a, b) for a, b in _places(asked, r[4])), r[2]),
    )
    return nearest[3], request_diff(asked, nearest[4])


def _model(canon: CanonicalRequest) -> Any:
    return canon.body.get("model") if isinstance(canon.body, dict) else None


def _places(asked: CanonicalRequest, recorded: CanonicalRequest) -> list[tuple[Any, Any]]:
    """The pairs of values that differ, one per place: the method, host, path and each query
    parameter, then the body's leaves, breadth-first (at most ``MAX_PLACES``)."""
    out: list[tuple[Any, Any]] = [
        (x, y)
        for x, y in (
            (asked.method, recorded.method),
            (asked.host, recorded.host or asked.host),  # an any-host recording: any host
            (asked.path, recorded.path),
        )
        if x != y
    ]
    mine, theirs = dict(asked.query), dict(recorded.query)
    out += [
        (mine.get(k), theirs.get(k))
        for k in sorted(mine.keys() | theirs.keys())
        if mine.get(k) != theirs.get(k)
    ]
    stack: list[tuple[Any, Any]] = [(asked.body, recorded.body)]
    while stack and len(out) < MAX_PLACES:
        x, y = stack.pop(0)
        if isinstance(x, dict) and isinstance(y, dict):
            keys = sorted(x.keys() | y.keys(), key=str)
            stack += [(x.get(k, _MISSING), y.get(k, _MISSING)) for k in keys]
        elif isinstance(x, list) and isinstance(y, list) and not (_text(x) and _text(y)):
            stack += [
                (x[i] if i < len(x) else _MISSING, y[i] if i < len(y) else _MISSING)
                for i in range(max(len(x), len(y)))
            ]
        elif x != y or type(x) is not type(y):
            out.append((x, y))  # a leaf, or a list of strings (an input): one place
    return out[:MAX_PLACES]


def _text(value: Any) -> str | None:
    """A string, or a non-empty list of strings as one text (an embeddings input)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return "\n".join(value)
    return None


def _distance(a: Any, b: Any) -> float:
    """0 (the same) to 1 (nothing in common): texts by their similarity, other values 1."""
    ta, tb = _text(a), _text(b)
    if ta is None or tb is None:
        return 1.0
    return 1.0 - text_similarity(ta, tb)


def text_similarity(a: str, b: str) -> float:
    """How alike two texts are, 0 to 1 (``difflib``'s ratio: twice the matched characters over
    both lengths), the common prefix and suffix counted whole and the middles compared over
    at most ``TEXT_WINDOW`` characters each."""
    if not a and not b:
        return 1.0
    prefix = len(os.path.commonprefix([a, b]))
    rest = min(len(a), len(b)) - prefix
    suffix = len(os.path.commonprefix([a[::-1][:rest], b[::-1][:rest]]))
    middle_a = a[prefix : len(a) - suffix][:TEXT_WINDOW]
    middle_b = b[prefix : len(b) - suffix][:TEXT_WINDOW]
    blocks = SequenceMatcher(None, middle_a, middle_b, autojunk=False).get_matching_blocks()
    same = prefix + suffix + sum(block.size for block in blocks)
    return 2 * same / (len(a) + len(b))
