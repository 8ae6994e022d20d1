"""Streaming bodies: split SSE / NDJSON bytes into events, and frame events back into bytes.

Network reads cut a stream anywhere: inside a line, between ``\\r`` and ``\\n``, inside a UTF-8
character. The splitters therefore buffer *bytes* and only decode whole lines, so every cut
yields the same events as the unsplit stream. Nothing here knows about mitmproxy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

StreamFormat = Literal["sse", "ndjson", "eventstream"]  # eventstream: see eventstream.py
LineFormat = Literal["sse", "ndjson"]  # the formats of lines of text, split and framed here

SSE_CONTENT_TYPES = ("text/event-stream",)
NDJSON_CONTENT_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")


@dataclass(slots=True)
class Event:
    """One event of a stream, as stored in a cassette.

    ``data`` is the parsed JSON when the payload is a JSON object or array, otherwise the raw
    string (``"[DONE]"`` stays a string). Only objects and arrays are parsed so that a string is
    always re-emitted verbatim: ``data: 42`` and ``data: "x"`` survive a round trip unchanged.
    ``t`` is the arrival time in seconds after the response headers. An AWS event stream's
    message (``eventstream.py``) has its typed ``headers`` in order, and its payload in
    ``data`` (bytes where it is neither JSON nor text); the SSE fields stay unset.
    """

    data: Any = None
    event: str | None = None
    id: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)
    t: float = 0.0
    headers: list[list[Any]] | None = None


class Unparsed(str):
    """An event payload kept as received: parsed only when the cassette is written, so a long
    stream being recorded costs its text once, not a tree of Python objects."""

    __slots__ = ()


def parse_data(text: str) -> Any:
    """Parse an event payload when it is a JSON object or array; otherwise keep the string."""
    text = str(text)  # orjson takes only exact str, not the Unparsed subclass
    if text.lstrip()[:1] in ("{", "["):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
    return text


def dump_data(data: Any) -> str:
    if data is None:
        return ""
    if isinstance(data, str):
        return data
    return orjson.dumps(data).decode()


class _LineBuffer:
    """Accumulates bytes and hands out complete lines (without their terminator).

    A line ends at ``\\n``, ``\\r\\n`` or a lone ``\\r``. A ``\\r`` at the very end of the buffer
    is held back, since the next chunk may start with its ``\\n``.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> list[str]:
        self._buf += chunk
        lines: list[str] = []
        buf = self._buf
        start = 0
        n = len(buf)
        while start < n:
            nl = buf.find(b"\n", start)
            cr = buf.find(b"\r", start, nl if nl != -1 else n)
            if cr != -1:
                if cr == n - 1:
                    break  # wait: a "\n" may follow in the next chunk
                end, nxt = cr, cr + (2 if buf[cr + 1] == 0x0A else 1)
            elif nl != -1:
                end, nxt = nl, nl + 1
            else:
                break
            lines.append(buf[start:end].decode("utf-8", errors="replace"))
            start = nxt
        del buf[:start]
        return lines

    def flush(self) -> list[str]:
        """The unterminated rest at end of stream, as a last line."""
        rest = bytes(self._buf)
        self._buf.clear()
        if rest.endswith(b"\r"):
            rest = rest[:-1]
        return [rest.decode("utf-8", errors="replace")] if rest else []


class SseSplitter:
    """Incremental parser for ``text/event-stream`` following the WHATWG event-stream rules.

    Feed it chunks as they arrive; each call returns the events completed by that chunk.
    Comment-only blocks (``: keep-alive``) become events with ``comments`` and no data, so a
    replay can re-emit them. With ``parse=False`` payloads stay ``Unparsed`` text.
    """

    def __init__(self, parse: bool = True) -> None:
        self._parse = parse_data if parse else Unparsed
        self._lines = _LineBuffer()
        self._reset()
        self._first_line = True

    def _reset(self) -> None:
        self._event: str | None = None
        self._data: list[str] | None = None
        self._id: str | None = None
        self._retry: int | None = None
        self._comments: list[str] = []

    def feed(self, chunk: bytes) -> list[Event]:
        return self._take(self._lines.feed(chunk))

    def flush(self) -> list[Event]:
        """Events still open when the stream ends (a last block without its blank line)."""
        events = self._take(self._lines.flush())
        pending = self._dispatch()
        return events + ([pending] if pending else [])

    def _take(self, lines: list[str]) -> list[Event]:
        out: list[Event] = []
        for line in lines:
            if self._first_line:
                self._first_line = False
                line = line.removeprefix("\ufeff")
            if not line:
                ev = self._dispatch()
                if ev is not None:
                    out.append(ev)
                continue
            if line.startswith(":"):
                self._comments.append(line[1:].removeprefix(" "))
                continue
            name, sep, value = line.partition(":")
            if sep:
                value = value.removeprefix(" ")
            if name == "data":
                if self._data is None:
                    self._data = [value]
                else:
                    self._data.append(value)
            elif name == "event":
                self._event = value
            elif name == "id":
                if "\0" not in value:
                    self._id = value
            elif name == "retry" and value.isdigit():
                self._retry = int(value)
            # other field names are ignored, as the spec says
        return out

    def _dispatch(self) -> Event | None:
        if self._data is None and not self._comments and self._event is None and self._id is None:
            self._reset()
            return None
        data = self._parse("\n".join(self._data)) if self._data is not None else None
        ev = Event(
            data=data, event=self._event, id=self._id, retry=self._retry, comments=self._comments
        )
        self._reset()
        return ev


class NdjsonSplitter:
    """Incremental splitter for newline-delimited JSON (Ollama's streaming format)."""

    def __init__(self, parse: bool = True) -> None:
        self._parse = parse_data if parse else Unparsed
        self._lines = _LineBuffer()

    def feed(self, chunk: bytes) -> list[Event]:
        return [Event(data=self._parse(line)) for line in self._lines.feed(chunk) if line.strip()]

    def flush(self) -> list[Event]:
        return [Event(data=self._parse(line)) for line in self._lines.flush() if line.strip()]


def splitter_for(fmt: LineFormat, parse: bool = True) -> SseSplitter | NdjsonSplitter:
    return SseSplitter(parse) if fmt == "sse" else NdjsonSplitter(parse)


def split(fmt: LineFormat, body: bytes) -> list[Event]:
    """Split a whole body at once."""
    splitter = splitter_for(fmt)
    return splitter.feed(body) + splitter.flush()


def frame_event(fmt: LineFormat, ev: Event) -> bytes:
    """The bytes of one event on the wire."""
    if fmt == "ndjson":
        return dump_data(ev.data).encode() + b"\n"
    parts: list[str] = [f": {c}\n" if c else ":\n" for c in ev.comments]
    if ev.event is not None:
        parts.append(f"event: {ev.event}\n")
    if ev.id is not None:
        parts.append(f"id: {ev.id}\n")
    if ev.retry is not None:
        parts.append(f"retry: {ev.retry}\n")
    if ev.data is not None:
        parts.extend(f"data: {line}\n" for line in dump_data(ev.data).split("\n"))
    parts.append("\n")
    return "".join(parts).encode()


def frame(fmt: LineFormat, events: Iterable[Event]) -> bytes:
    return b"".join(frame_event(fmt, ev) for ev in events)


def parsed(ev: Event) -> Any:
    """The event's payload as data, parsing ``Unparsed`` text on demand."""
    return parse_data(ev.data) if isinstance(ev.data, Unparsed) else ev.data


_END_HINTS = (
    '"message_stop"',
    '"done":true',
    '"done": true',
    '"response.completed"',
    '"response.failed"',
    '"response.incomplete"',
)


def is_end_event(ev: Event) -> bool:
    """Whether this event is a provider's own end-of-stream marker.

    SDKs stop reading as soon as they see it, so a stream that reached it is complete even if
    the client hung up before the last HTTP chunk.
    """
    if ev.event == "message_stop":  # Anthropic
        return True
    data = ev.data
    if isinstance(data, Unparsed):
        if data.strip() == "[DONE]":
            return True
        if not any(hint in data for hint in _END_HINTS):  # cheap test before parsing
            return False
        data = parse_data(data)
    if isinstance(data, str):
        return data.strip() == "[DONE]"
    if isinstance(data, dict):
        if data.get("type") == "message_stop":
            return True
        if data.get("done") is True:  # Ollama
            return True
        if data.get("type") in ("response.completed", "response.failed", "response.incomplete"):
            return True
    return False


def asks_for_stream(path: str, body: Any) -> bool:
    """Whether a request asked for a streamed answer, whatever content type comes back:
    ``"stream": true`` in its (canonical) body, or Gemini's ``:streamGenerateContent``."""
    if ":streamGenerateContent" in path:
        return True
    return isinstance(body, dict) and body.get("stream") is True
