"""The stream formats side by side: which one a response's ``content-type`` announces, and for
each its incremental splitter, its framing and its end marker. SSE and NDJSON are lines of text
(``sse.py``); AWS event streams are binary messages (``eventstream.py``)."""

from __future__ import annotations

from collections.abc import Iterable

from proxy_addon.bodies import bedrock, eventstream, sse
from proxy_addon.bodies.sse import Event, StreamFormat

Splitter = sse.SseSplitter | sse.NdjsonSplitter | eventstream.EventStreamSplitter


def stream_format(content_type: str | None) -> StreamFormat | None:
    """Which streaming format a ``content-type`` announces, or ``None`` for a plain body."""
    if not content_type:
        return None
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime in sse.SSE_CONTENT_TYPES:
        return "sse"
    if mime in sse.NDJSON_CONTENT_TYPES:
        return "ndjson"
    if mime == eventstream.CONTENT_TYPE:
        return "eventstream"
    return None


def splitter_for(fmt: StreamFormat, parse: bool = True) -> Splitter:
    """The incremental splitter of a format (``parse``: text payloads parsed as they come, or
    kept as ``Unparsed`` text; an event stream's are always made readable, to be scrubbed)."""
    if fmt == "eventstream":
        return eventstream.EventStreamSplitter()
    return sse.splitter_for(fmt, parse)


def split(fmt: StreamFormat, body: bytes) -> list[Event]:
    """Split a whole body at once (``FramingError`` for an event stream that breaks its
    framing)."""
    if fmt == "eventstream":
        return eventstream.EventStreamSplitter().feed(body)
    return sse.split(fmt, body)


def frame_event(fmt: StreamFormat, ev: Event) -> bytes:
    """The bytes of one event on the wire."""
    return eventstream.frame_event(ev) if fmt == "eventstream" else sse.frame_event(fmt, ev)


def frame(fmt: StreamFormat, events: Iterable[Event]) -> bytes:
    return b"".join(frame_event(fmt, ev) for ev in events)


def is_end_event(fmt: StreamFormat, ev: Event) -> bool:
    """Whether this event is its provider's own end-of-stream marker (SDKs may hang up as soon
    as they read it)."""
    return bedrock.is_end(ev) if fmt == "eventstream" else sse.is_end_event(ev)
