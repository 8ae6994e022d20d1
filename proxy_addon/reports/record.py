"""One request as the report shows it: a plain dict (it goes into the summary's JSON as it is),
made by the replay hook when it decides what the request is. A miss also says where its nearest
recording differs, with both values, and carries both bodies for the HTML report's diff.

Schema of a record (README, "Reports"): ``test_id``, ``method``, ``host``, ``path``, ``model``,
``outcome`` (``run.OUTCOMES``), ``at`` (Unix time it arrived), ``ms`` (until its response
ended), ``file`` (the recording that answered or was refused), ``notes`` (``other host``,
``normalised``), ``input_tokens`` / ``output_tokens`` (a hit's recorded usage), ``message`` (a
miss or a refusal's text), ``reason`` (a refusal's, short), ``nearest``, ``differences``
(``[{path, asked, recorded}]``), ``asked_body``, ``recorded_body``."""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson

from proxy_addon.bodies.reassemble import reassemble
from proxy_addon.matching.canonical import CanonicalRequest
from proxy_addon.matching.jsonpath import parse_path
from proxy_addon.model import RecordedResponse
from proxy_addon.reports.tokens import tokens_of
from proxy_addon.serving.misses import clip, quote
from proxy_addon.store.entries import Entry
from proxy_addon.store.index import Index

BODY_LIMIT = 20_000  # characters of each body a miss keeps for the side-by-side diff
ABSENT = "(absent)"


def request_record(
    canon: CanonicalRequest,
    outcome: str,
    test_id: str | None,
    details: Mapping[str, object] = MappingProxyType({}),
) -> dict[str, Any]:
    """A request's record; ``details``: the fields its outcome adds (``file``, ``message``...)."""
    model = canon.body.get("model") if isinstance(canon.body, dict) else None
    return {
        "test_id": test_id,
        "method": canon.method,
        "host": canon.host,
        "path": canon.path,
        "model": model if isinstance(model, str) else None,
        "outcome": outcome,
        "at": round(time.time(), 3),
        **details,
    }


def hit_usage(resp: RecordedResponse) -> dict[str, int]:
    """The tokens a recorded answer used, as its own ``usage`` says; empty if it says none, or
    if its body is one ``reassemble`` cannot read: counting tokens never fails a hit."""
    try:
        tokens = tokens_of(reassemble(resp).usage)
    except Exception:  # noqa: BLE001 - any body a provider may send
        return {}
    return {} if tokens is None else {"input_tokens": tokens[0], "output_tokens": tokens[1]}


def miss_detail(
    canon: CanonicalRequest, index: Index, near: tuple[Entry, list[str]] | None
) -> dict[str, Any]:
    """The nearest recording of a miss (``near``, as ``serving.misses.nearest`` found it) and
    where it differs, each path with both values, and both bodies (pretty JSON, clipped) for a
    side-by-side diff."""
    if near is None:
        return {}
    entry, paths = near
    try:
        recorded = index.canonical(entry.request)
    except (RecursionError, OSError, ValueError):  # too deep to compare, or a file gone
        return {}
    return {
        "nearest": str(entry.path),
        "differences": [
            {"path": p, "asked": _value_at(canon, p), "recorded": _value_at(recorded, p)}
            for p in paths
        ],
        "asked_body": _pretty(canon.body),
        "recorded_body": _pretty(recorded.body),
    }


def _value_at(canon: CanonicalRequest, path: str) -> str:
    """The value at one of ``difference.request_diff``'s paths, as short text."""
    if path in ("method", "host", "path"):
        return str(getattr(canon, path))
    if path.startswith("query."):
        values = [v for k, v in canon.query if k == path[len("query.") :]]
        return quote(values) if values else ABSENT
    value: Any = canon.body
    if path == "(body)":
        return quote(value)
    try:
        for key in parse_path(path):
            value = value[key]
    except (ValueError, KeyError, IndexError, TypeError):
        return ABSENT
    return quote(value)


def _pretty(body: Any) -> str:
    try:
        text = orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        text = str(body)
    return clip(text, BODY_LIMIT)
