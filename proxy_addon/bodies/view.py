"""What the mitmproxy content view shows (``mitm/contentview.py`` registers it): an LLM
answer's SSE or NDJSON stream as the assistant text it assembles to (``reassemble``) and its
events one per line, and a cassette file (when a body is one) as its request and each recorded
answer. Pure: bytes and a content type in, text out (``None``: not such a body)."""

from __future__ import annotations

from typing import Any

import orjson

from proxy_addon.bodies.reassemble import reassemble
from proxy_addon.bodies.sse import dump_data
from proxy_addon.bodies.streams import split, stream_format
from proxy_addon.formats import cassette
from proxy_addon.model import RecordedResponse, Recording, Stream

EVENT_WIDTH = 300  # characters of one event's payload shown on its line


def applies(data: bytes, content_type: str | None) -> bool:
    """Whether the view renders this body: a stream, or a cassette document."""
    return stream_format(content_type) is not None or _cassette(data, content_type) is not None


def render(data: bytes, content_type: str | None) -> str | None:
    fmt = stream_format(content_type)
    if fmt is not None:
        return _answer(RecordedResponse(200, stream=Stream(fmt, split(fmt, data))))
    recording = _cassette(data, content_type)
    return None if recording is None else _recording(recording)


def _answer(resp: RecordedResponse) -> str:
    """The assembled answer first (what the user saw), then every event."""
    transcript = reassemble(resp).render()
    lines = ["[assembled answer]", transcript or "(no text)"]
    if resp.stream is not None:
        events = resp.stream.events
        cut = "" if resp.stream.complete else f", cut: {resp.stream.cut or 'before its end'}"
        lines += ["", f"[{len(events)} events, {resp.stream.format}{cut}]"]
        for n, ev in enumerate(events):
            text = dump_data(ev.data)
            text = text if len(text) <= EVENT_WIDTH else text[:EVENT_WIDTH] + "..."
            lines.append(f"{n:>4} {ev.event or '-'}: {text}")
    return "\n".join(lines)


def _cassette(data: bytes, content_type: str | None) -> Recording | None:
    """The recording a JSON body holds, when it is one of our cassette files."""
    if content_type not in ("application/json", None) or not data.lstrip().startswith(b"{"):
        return None
    try:
        doc: Any = orjson.loads(data)
        if not (cassette.is_ours(doc) and "request" in doc and "responses" in doc):
            return None
        return cassette.from_dict(doc, None)
    except Exception:  # noqa: BLE001 - any JSON body: mitmproxy asks every view about each
        return None


def _recording(rec: Recording) -> str:
    req = rec.request
    lines = [
        f"[cassette] {req.method} {req.url}" + (f"  test: {rec.test_id}" if rec.test_id else "")
    ]
    if req.body is not None and req.body.kind == "json":
        lines.append(orjson.dumps(req.body.value, option=orjson.OPT_INDENT_2).decode())
    for n, resp in enumerate(rec.responses, 1):
        when = f", recorded {resp.recorded_at}" if resp.recorded_at else ""
        lines += ["", f"[response {n} of {len(rec.responses)}: {resp.status}{when}]", _answer(resp)]
    return "\n".join(lines)
