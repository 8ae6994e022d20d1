"""What a cassette holds, independent of how it is stored: a request and its recorded responses.

Both file formats (ours, llama-stack's) read into these classes, so matching, the store and the
proxy never need to know which format a file was in.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from proxy_addon.bodies import multipart
from proxy_addon.bodies.sse import Event, StreamFormat

BodyKind = Literal["json", "text", "base64", "multipart"]
Side = Literal["client", "server"]  # who sent a WebSocket message or close

_BINARY_MIME_PREFIXES = (
    "audio/",
    "image/",
    "video/",
    "application/octet-stream",
    "application/pdf",
    "application/zip",
)


class CassetteError(ValueError):
    """A file that cannot be read as a cassette; the message names the file and the reason."""

    def __init__(self, path: Path | str | None, reason: str) -> None:
        self.path = str(path) if path is not None else None
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path is not None else reason)


def require(cond: object, path: Path | str | None, reason: str) -> None:
    """Raise ``CassetteError`` naming the file unless ``cond`` holds (both readers use it)."""
    if not cond:
        raise CassetteError(path, reason)


def text_of(raw: bytes, content_type: str | None) -> str | None:
    """A body that is not JSON as the text it is stored as (``body_text``), or None when it is
    stored as bytes (``body_base64``): a binary type, not UTF-8, or holding a NUL."""
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    if mime.startswith(_BINARY_MIME_PREFIXES):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if "\x00" in text else text


def starts_like_json(raw: bytes) -> bool:
    """Whether ``raw`` starts like a JSON object or array, after any whitespace: looked at
    without copying the body (as ``lstrip`` would) where it starts at once."""
    first = raw[:1]
    if first in (b"{", b"["):
        return True
    return first.isspace() and raw.lstrip()[:1] in (b"{", b"[")


def json_value(raw: bytes) -> dict[str, Any] | list[Any] | None:
    """``raw`` as a JSON object or array, when it is one that orjson also writes back (one
    nested deeper than orjson writes is kept as text); None otherwise."""
    if not starts_like_json(raw):
        return None
    try:
        value = orjson.loads(raw)
        orjson.dumps(value)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return None
    return value if isinstance(value, (dict, list)) else None


@dataclass(slots=True)
class Body:
    """A body as stored: parsed JSON, text, base64 for bytes that are not text, or for a
    multipart upload its fields with a SHA-256 per file (the file bytes are not kept)."""

    kind: BodyKind
    value: Any

    @classmethod
    def from_bytes(cls, raw: bytes, content_type: str | None = None) -> Body | None:
        if not raw:
            return None
        mime = (content_type or "").split(";", 1)[0].strip().lower()
        if mime == "multipart/form-data":
            parts = multipart.fields(content_type or "", raw)
            if parts is not None:
                return cls("multipart", parts)
        if mime.startswith(_BINARY_MIME_PREFIXES):
            return cls("base64", base64.b64encode(raw).decode())
        value = json_value(raw)
        if value is not None:
            return cls("json", value)
        text = text_of(raw, content_type)
        return cls("base64", base64.b64encode(raw).decode()) if text is None else cls("text", text)

    def to_bytes(self) -> bytes:
        if self.kind == "json":
            return orjson.dumps(self.value)
        if self.kind == "text":
            return self.value.encode("utf-8")
        if self.kind == "multipart":
            raise ValueError("a multipart upload is stored as its fields' hashes, not its bytes")
        return base64.b64decode(self.value)


@dataclass(slots=True)
class Stream:
    """A streamed body split into events. ``complete`` is False when it was cut off, and
    ``cut`` then says why when the proxy knows (a decode error, the upstream closing)."""

    format: StreamFormat
    events: list[Event]
    complete: bool = True
    cut: str | None = None


@dataclass(slots=True)
class WebSocketMessage:
    """One message of a WebSocket conversation: who sent it, when (seconds after the
    handshake), and its payload (``json`` or ``text`` for a text message, ``base64`` for a
    binary one)."""

    side: Side
    payload: Body
    t: float = 0.0


@dataclass(slots=True)
class WebSocketClose:
    """How a WebSocket conversation ended: the close code and reason, and who closed it (1006:
    the connection dropped without a close frame)."""

    side: Side
    code: int
    reason: str = ""
    t: float = 0.0


@dataclass(slots=True)
class WebSocketConversation:
    """What followed a 101 answer: every message in order, then the close."""

    messages: list[WebSocketMessage] = field(default_factory=list)
    close: WebSocketClose | None = None


@dataclass(slots=True)
class RecordedRequest:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: Body | None = None
    # llama-stack recordings were made by an SDK against some base URL; they match any host.
    any_host: bool = False

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")


@dataclass(slots=True, weakref_slot=True)  # the replay keeps what it sends for as long as it lives
class RecordedResponse:
    status: int
    headers: list[list[str]] = field(default_factory=list)
    body: Body | None = None
    stream: Stream | None = None
    websocket: WebSocketConversation | None = None  # a 101 answer: the conversation after it
    recorded_at: str | None = None


@dataclass(slots=True)
class Recording:
    request: RecordedRequest
    responses: list[RecordedResponse]
    test_id: str | None = None
    source: Literal["cassette", "llama-stack"] = "cassette"
    # What a llama-stack file said beyond the wire exchange (type names, endpoint, tool), kept
    # so that an export writes back what llama-stack's recorder would load.
    llama_stack: dict[str, Any] | None = None
