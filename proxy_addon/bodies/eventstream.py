"""AWS event streams (``application/vnd.amazon.eventstream``), Bedrock's streaming framing:
binary messages, each a prelude (total and headers length, the prelude's CRC32), typed headers,
a payload and the message's CRC32. Split incrementally from any cut, checked, and framed back
byte for byte.

A message is kept as an ``Event`` whose ``headers`` are its typed headers in their order, as a
cassette stores them (``[name, value]`` for a string, ``[name, value, type]`` otherwise), and
whose ``data`` is its payload made readable: the JSON object or array it holds, with a base64
``bytes`` member holding JSON (InvokeModelWithResponseStream's chunks: the model's own events)
decoded to that JSON; text that is not such JSON as text; other bytes as bytes. Each readable
form is kept only when framing it again gives back the very bytes received (checked when the
message is read), so a replay re-frames every message byte-exact and recomputes its CRC32s;
only a message the scrub changed is framed anew (``scrubbed_member``: a secret in a ``bytes``
member kept as base64 is found too). Nothing here knows about mitmproxy.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import struct
import uuid
import zlib
from collections.abc import Callable
from typing import Any

import orjson

from proxy_addon.bodies.sse import Event
from proxy_addon.model import text_of

CONTENT_TYPE = "application/vnd.amazon.eventstream"

# Header value types, by their code on the wire (0 and 1 are true and false, with no value).
_TYPES: tuple[str, ...] = ("boolean", "boolean", "byte", "short", "integer", "long", "bytes")
_TYPES += ("string", "timestamp", "uuid")
_INTS = {"byte": (2, "!b"), "short": (3, "!h"), "integer": (4, "!i"), "long": (5, "!q")}
_INTS["timestamp"] = (8, "!q")  # milliseconds since the epoch
HEADER_TYPES = frozenset(_TYPES)

# botocore's limits: a message larger than these is refused as corrupt, never buffered.
MAX_HEADERS = 128 * 1024
MAX_PAYLOAD = 24 * 1024 * 1024
_PRELUDE = 12  # total length, headers length, prelude CRC
_OVERHEAD = _PRELUDE + 4  # and the message CRC at the end

Header = list[Any]  # [name, value] (a string) or [name, value, type]


class FramingError(ValueError):
    """Bytes that are not a well-formed event stream: a CRC that does not match, a length out
    of bounds, an unknown header type, a stream that ends inside a message."""


# -- headers -------------------------------------------------------------------------------------


def _value_bytes(name: str, value: Any, kind: str) -> bytes:
    if kind == "string":
        raw = value.encode("utf-8")
        return b"\x07" + struct.pack("!H", len(raw)) + raw
    if kind == "boolean":
        return b"\x00" if value else b"\x01"
    if kind in _INTS:
        code, fmt = _INTS[kind]
        return bytes([code]) + struct.pack(fmt, value)
    if kind == "bytes":
        raw = base64.b64decode(value, validate=True)
        return b"\x06" + struct.pack("!H", len(raw)) + raw
    if kind == "uuid":
        return b"\x09" + uuid.UUID(value).bytes
    raise FramingError(f"header {name!r} has an unknown type {kind!r}")


def encode_headers(headers: list[Header]) -> bytes:
    """The wire bytes of headers as stored, in their order."""
    out = bytearray()
    for header in headers:
        name, value = header[0], header[1]
        kind = header[2] if len(header) > 2 else "string"
        raw_name = name.encode("utf-8")
        out += bytes([len(raw_name)]) + raw_name + _value_bytes(name, value, kind)
    return bytes(out)


def decode_headers(raw: bytes) -> list[Header]:
    """Headers as stored: ``[name, value]`` for a string, ``[name, value, type]`` otherwise
    (bytes as base64, a uuid as its text, a timestamp as milliseconds)."""
    headers: list[Header] = []
    i, end = 0, len(raw)
    try:
        while i < end:
            size = raw[i]
            name = raw[i + 1 : i + 1 + size].decode("utf-8")
            i += 1 + size
            code = raw[i]
            i += 1
            if code > 9:
                raise FramingError(f"header {name!r} has an unknown type code {code}")
            kind = _TYPES[code]
            if code in (0, 1):
                headers.append([name, code == 0, kind])
            elif kind in _INTS:
                fmt = _INTS[kind][1]
                headers.append([name, struct.unpack_from(fmt, raw, i)[0], kind])
                i += struct.calcsize(fmt)
            elif kind in ("string", "bytes"):
                (length,) = struct.unpack_from("!H", raw, i)
                value = raw[i + 2 : i + 2 + length]
                if len(value) != length:
                    raise FramingError(f"header {name!r} is cut short")
                i += 2 + length
                headers.append(
                    [name, value.decode("utf-8")]
                    if kind == "string"
                    else [name, base64.b64encode(value).decode(), kind]
                )
            else:  # uuid
                if i + 16 > end:
                    raise FramingError(f"header {name!r} is cut short")
                headers.append([name, str(uuid.UUID(bytes=raw[i : i + 16])), kind])
                i += 16
    except (IndexError, struct.error, UnicodeDecodeError) as e:
        raise FramingError(f"headers that do not parse: {e}") from None
    return headers


def header_value(headers: list[Header] | None, name: str) -> Any:
    """The value of the header ``name`` (``:event-type``, ``:message-type``), or None."""
    return next((h[1] for h in headers or () if h[0] == name), None)


def header_problem(header: Any) -> str | None:
    """Why a header as stored cannot be framed, or None (for the cassette's validation)."""
    if not isinstance(header, list) or len(header) not in (2, 3):
        return "must be [name, value] or [name, value, type]"
    if not isinstance(header[0], str) or not 0 < len(header[0].encode()) < 256:
        return "its name must be a string of 1 to 255 bytes"
    kind = header[2] if len(header) == 3 else "string"
    if kind not in HEADER_TYPES:
        return f"its type must be one of {', '.join(sorted(HEADER_TYPES))}"
    try:
        _value_bytes(header[0], header[1], kind)
    except (AttributeError, TypeError, ValueError, struct.error, binascii.Error):
        return f"its value is not a {kind}"
    return None


# -- payloads ------------------------------------------------------------------------------------


def _exact_json(raw: bytes) -> Any:
    """``raw`` as a JSON object or array when orjson writes it back to the very same bytes."""
    if raw[:1] not in (b"{", b"["):
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if orjson.dumps(value) == raw else None


def _member_bytes(value: Any) -> bytes | None:
    """What a payload's base64 ``bytes`` member holds; None without one."""
    if not isinstance(value, dict) or not isinstance(value.get("bytes"), str):
        return None
    try:
        return base64.b64decode(value["bytes"], validate=True)
    except ValueError:  # not base64 (binascii.Error), or not ASCII
        return None


def _with_member(value: dict[str, Any], member: Any) -> dict[str, Any]:
    return {k: member if k == "bytes" else v for k, v in value.items()}


def _decoded_member(value: Any) -> Any:
    """A payload whose base64 ``bytes`` member holds JSON, with that member decoded."""
    raw = _member_bytes(value)
    inner = None if raw is None else _exact_json(raw)
    return value if inner is None else _with_member(value, inner)


def scrubbed_member(data: Any, scrub: Callable[[Any], Any]) -> Any:
    """``scrub(data)``, but for a payload whose ``bytes`` member is still base64 (what it holds
    is not JSON that frames back exactly): that member opened for ``scrub`` (the JSON object or
    array it holds, else its UTF-8 text), so no secret hides in base64. ``data`` itself when
    ``scrub`` changed nothing; otherwise the scrubbed JSON stays opened (``payload_bytes``
    frames it as compact JSON: that message is no longer byte-exact) and text is base64 again."""
    raw = _member_bytes(data)
    if raw is None:
        return scrub(data)
    try:
        inner: Any = raw.decode("utf-8")
    except UnicodeDecodeError:  # bytes that are not text: nothing to read a secret in
        return scrub(data)
    with contextlib.suppress(orjson.JSONDecodeError):  # else it is read as text
        inner = orjson.loads(raw) if raw[:1] in (b"{", b"[") else inner
    opened = _with_member(data, inner)
    new = scrub(opened)
    if new is opened:
        return data
    if isinstance(new.get("bytes"), str):
        return _with_member(new, base64.b64encode(new["bytes"].encode()).decode())
    return new


def readable(payload: bytes, content_type: str | None = None) -> Any:
    """A payload as an event holds it (see the module's docstring), given its message's
    ``:content-type``: None when empty, text where a body would be text (``text_of``)."""
    if not payload:
        return None
    value = _exact_json(payload)
    if value is not None:
        value = _decoded_member(value)
        if payload_bytes(value) == payload:
            return value
    text = text_of(payload, content_type)
    return payload if text is None else text


def payload_bytes(data: Any) -> bytes:
    """The payload's bytes again: the inverse of ``readable`` (a decoded ``bytes`` member is
    written as compact JSON and base64-encoded again)."""
    if data is None:
        return b""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, dict) and isinstance(data.get("bytes"), (dict, list)):
        data = {
            k: base64.b64encode(orjson.dumps(v)).decode() if k == "bytes" else v
            for k, v in data.items()
        }
    return orjson.dumps(data)


# -- messages ------------------------------------------------------------------------------------


def encode_message(headers: bytes, payload: bytes) -> bytes:
    """One message on the wire, its two CRC32s computed."""
    total = _OVERHEAD + len(headers) + len(payload)
    prelude = struct.pack("!II", total, len(headers))
    head = prelude + struct.pack("!I", zlib.crc32(prelude))
    body = head + headers + payload
    return body + struct.pack("!I", zlib.crc32(body))


def frame_event(ev: Event) -> bytes:
    """An event as the message it was read from."""
    return encode_message(encode_headers(ev.headers or []), payload_bytes(ev.data))


class EventStreamSplitter:
    """Reads messages from chunks cut anywhere, checking both CRC32s and the lengths; each
    message becomes an ``Event``. A stream that is not well formed raises ``FramingError``
    (the live tap then stops its copy there and marks the recording as cut)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> list[Event]:
        buf = self._buf
        buf += chunk
        out: list[Event] = []
        start = 0
        while len(buf) - start >= _PRELUDE:
            total, headers_length, prelude_crc = struct.unpack_from("!III", buf, start)
            if zlib.crc32(buf[start : start + 8]) != prelude_crc:
                raise FramingError("a message's prelude CRC32 does not match its bytes")
            if (
                headers_length > MAX_HEADERS
                or total < _OVERHEAD + headers_length
                or total - _OVERHEAD - headers_length > MAX_PAYLOAD
            ):
                raise FramingError(
                    f"a message of {total} bytes with {headers_length} of headers is out of bounds"
                )
            if len(buf) - start < total:
                break
            message = bytes(buf[start : start + total])
            start += total
            (message_crc,) = struct.unpack_from("!I", message, total - 4)
            if zlib.crc32(message[:-4]) != message_crc:
                raise FramingError("a message's CRC32 does not match its bytes")
            headers = decode_headers(message[_PRELUDE : _PRELUDE + headers_length])
            payload = message[_PRELUDE + headers_length : -4]
            content_type = header_value(headers, ":content-type")
            out.append(Event(data=readable(payload, content_type), headers=headers))
        del buf[:start]
        return out

    def flush(self) -> list[Event]:
        if self._buf:
            raise FramingError(f"the stream ended inside a message ({len(self._buf)} bytes)")
        return []
