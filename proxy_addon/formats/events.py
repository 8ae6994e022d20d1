"""A stream's events as a cassette stores them, written and read back with every field checked.

An SSE or NDJSON event is ``{"t", "comments", "event", "id", "retry", "data"}`` (each field only
when present). An AWS event stream's message is ``{"t", "headers", "data" | "base64"}``: its
typed headers in their order (``[name, value]`` for a string, ``[name, value, type]``
otherwise), and its payload as JSON (a chunk's base64 ``bytes`` shown as the JSON it holds),
as text, or as base64 for other bytes (``bodies/eventstream.py`` says when each is used); a
replay frames it back byte for byte.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from proxy_addon.bodies.eventstream import header_problem
from proxy_addon.bodies.sse import Event, parsed
from proxy_addon.model import CassetteError, require


def event_to_dict(ev: Event) -> dict[str, Any]:
    out: dict[str, Any] = {"t": round(ev.t, 4)}
    if ev.headers is not None:
        out["headers"] = ev.headers
    if ev.comments:
        out["comments"] = ev.comments
    if ev.event is not None:
        out["event"] = ev.event
    if ev.id is not None:
        out["id"] = ev.id
    if ev.retry is not None:
        out["retry"] = ev.retry
    if isinstance(ev.data, bytes):
        out["base64"] = base64.b64encode(ev.data).decode()
    elif ev.data is not None:
        out["data"] = parsed(ev)
    return out


def time_offset(obj: dict[str, Any], where: str, path: Path | str | None) -> float:
    """An event's or a message's ``t``: seconds after the response headers or the handshake."""
    t = obj.get("t", 0.0)
    require(
        isinstance(t, (int, float)) and not isinstance(t, bool) and t >= 0,
        path,
        f"{where}.t must be a non-negative number",
    )
    return float(t)


def _headers(obj: dict[str, Any], where: str, path: Path | str | None) -> list[list[Any]]:
    headers = obj.get("headers", [])
    require(isinstance(headers, list), path, f"{where}.headers must be a list")
    for i, header in enumerate(headers):
        problem = header_problem(header)
        require(problem is None, path, f"{where}.headers[{i}]: {problem}")
    return headers


def _payload(obj: dict[str, Any], where: str, path: Path | str | None) -> Any:
    if "base64" not in obj:
        return obj.get("data")
    require("data" not in obj, path, f"{where} has both data and base64")
    require(isinstance(obj["base64"], str), path, f"{where}.base64 must be a string")
    try:
        return base64.b64decode(obj["base64"], validate=True)
    except ValueError:
        raise CassetteError(path, f"{where}.base64 is not valid base64") from None


def event_from(obj: Any, where: str, path: Path | str | None, binary: bool) -> Event:
    """One stored event; ``binary``: the stream is an AWS event stream (headers and a payload
    in ``data`` or ``base64``)."""
    require(isinstance(obj, dict), path, f"{where} must be an object")
    t = time_offset(obj, where, path)
    for name in ("event", "id"):
        require(
            obj.get(name) is None or isinstance(obj.get(name), str),
            path,
            f"{where}.{name} must be a string",
        )
    retry = obj.get("retry")
    require(
        retry is None or (isinstance(retry, int) and not isinstance(retry, bool)),
        path,
        f"{where}.retry must be an integer",
    )
    comments = obj.get("comments", [])
    require(
        isinstance(comments, list) and all(isinstance(c, str) for c in comments),
        path,
        f"{where}.comments must be a list of strings",
    )
    require(
        binary or ("headers" not in obj and "base64" not in obj),
        path,
        f"{where}: headers and base64 belong to an event stream's messages",
    )
    return Event(
        data=_payload(obj, where, path),
        event=obj.get("event"),
        id=obj.get("id"),
        retry=retry,
        comments=list(comments),
        t=t,
        headers=_headers(obj, where, path) if binary else None,
    )
