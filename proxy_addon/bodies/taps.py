"""The live taps on a response mitmproxy streams to the client: each chunk goes on untouched
while a decoded copy is split into events (``StreamCapture``) or kept whole (``BodyTap``)."""

from __future__ import annotations

import time

from proxy_addon.bodies.decoding import decoder_for
from proxy_addon.bodies.sse import Event, StreamFormat
from proxy_addon.bodies.streams import is_end_event, splitter_for


class StreamCapture:
    """Collects the events of a live stream with their arrival times, and knows whether the
    stream is complete: its provider's end marker was seen, or the upstream finished it."""

    def __init__(self, fmt: StreamFormat) -> None:
        self.format: StreamFormat = fmt
        self.events: list[Event] = []
        self.saw_end_marker = False
        self.upstream_finished = False
        self.cut: str | None = None  # why the copy stopped before the end, when it did
        self._splitter = splitter_for(fmt, parse=False)

    def feed(self, chunk: bytes, t: float) -> None:
        for ev in self._splitter.feed(chunk):
            self._add(ev, t)

    def finish(self, t: float) -> None:
        """The upstream sent its last byte: flush an unterminated last event. An event stream
        that ended inside a message is marked as cut, with the reason."""
        self.upstream_finished = True
        if self.cut is not None:
            return
        try:
            for ev in self._splitter.flush():
                self._add(ev, t)
        except ValueError as e:
            self.cut = f"could not decode the stream: {type(e).__name__}: {e}"

    def _add(self, ev: Event, t: float) -> None:
        ev.t = t
        self.events.append(ev)
        if is_end_event(self.format, ev):
            self.saw_end_marker = True

    @property
    def complete(self) -> bool:
        return self.cut is None and (self.saw_end_marker or self.upstream_finished)


class BodyTap:
    """The live tap on a plain body that arrives progressively (Gemini's JSON-array stream, an
    error answering a streaming request): each chunk goes on to the client at once, and the
    body is kept whole to be stored when it ends."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def __call__(self, chunk: bytes) -> bytes:
        if chunk:
            self.chunks.append(chunk)
        return chunk


class StreamTap:
    """The live tap on a streamed response: called with each chunk as it arrives (``b""`` at
    the end), it returns the chunk untouched for the client and feeds a decoded copy to a
    ``StreamCapture`` with its arrival time. A chunk it cannot decode never stops the client's
    stream: the copy stops there and is marked as cut, with the reason."""

    def __init__(
        self, fmt: StreamFormat, content_encoding: str, started: float, max_bytes: int
    ) -> None:
        self.capture = StreamCapture(fmt)
        self._decoder = decoder_for(content_encoding)  # ValueError: unknown encoding
        self._started = started
        self._room = max_bytes  # decoded bytes the copy may still take

    def __call__(self, chunk: bytes) -> bytes:
        capture = self.capture
        if capture.cut is not None:
            return chunk
        t = time.monotonic() - self._started
        try:
            if chunk:
                data = self._decoder.feed(chunk, self._room + 1) if self._decoder else chunk
                self._room -= len(data)
                if self._room < 0:
                    capture.cut = "the stream is larger than cassette_max_file_mb: not kept"
                    return chunk
                capture.feed(data, t)
            else:
                capture.finish(t)
                if self._decoder is not None and not self._decoder.finished:
                    capture.cut = "the compressed stream ended before its end"
        except Exception as e:  # noqa: BLE001 - any decoding fault: the client's bytes go on
            capture.cut = f"could not decode the stream: {type(e).__name__}: {e}"
        return chunk
