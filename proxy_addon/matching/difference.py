"""Why a request missed: the JSON paths where it differs from a recorded request, and the
recording that differs least. Iterative, so arbitrarily deep bodies cannot overflow the stack."""

from __future__ import annotations

from collections.abc import Iterable
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


def closest(
    asked: CanonicalRequest, candidates: Iterable[tuple[Any, CanonicalRequest]]
) -> tuple[Any, list[str]] | None:
    """The candidate whose request differs from ``asked`` in the fewest paths."""
    best: tuple[Any, list[str]] | None = None
    for item, canon in candidates:
        diffs = request_diff(asked, canon)
        if best is None or len(diffs) < len(best[1]):
            best = (item, diffs)
    return best
