"""Our cassette format: pretty-printed JSON, one distinct request per file.

Version 1 is every HTTP recording; version 2 adds the ``websocket`` section of a 101 answer
(the messages and close of a WebSocket conversation); version 3 adds streams in the
``eventstream`` format (AWS event streams: ``events.py``). A file is written with the lowest
version that holds it, so HTTP cassettes stay readable by older tools, and an older tool
refuses a newer cassette (naming the version) rather than misread it.

Files are written with a fixed field order (our own fields in a fixed order, provider payloads
in the order the provider sent them) so re-recording the same traffic gives a small git diff,
and a long stream is written event by event, never held as one tree of objects. Reading checks
every field; an error names the file and the field.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from proxy_addon.formats.events import event_from, event_to_dict, time_offset
from proxy_addon.model import (
    Body,
    BodyKind,
    CassetteError,
    RecordedRequest,
    RecordedResponse,
    Recording,
    Stream,
    WebSocketClose,
    WebSocketConversation,
    WebSocketMessage,
    require,
)

HTTP_VERSION = 1  # a file of HTTP answers only
WEBSOCKET_VERSION = 2  # a file with a ``websocket`` section
EVENTSTREAM_VERSION = 3  # a file with an AWS event stream
FORMAT_VERSION = EVENTSTREAM_VERSION  # the newest version this tool reads
FORMAT_NAME = "llm-cassette"

BODY_FIELDS: dict[BodyKind, str] = {
    "json": "body",
    "text": "body_text",
    "base64": "body_base64",
    "multipart": "body_multipart",
}
# A WebSocket message's payload: parsed JSON, other text, or a binary message's bytes.
_PAYLOAD_FIELDS: dict[BodyKind, str] = {"json": "data", "text": "text", "base64": "base64"}
_SIDES = ("client", "server")


# ---------------------------------------------------------------------------------------------
# Writing


def _body_fields(body: Body | None) -> dict[str, Any]:
    return {} if body is None else {BODY_FIELDS[body.kind]: body.value}


_EVENTS_MARK = "\x00events of response {}\x00"


def websocket_to_dict(conv: WebSocketConversation) -> dict[str, Any]:
    """The ``websocket`` section: messages as ``{"t", "from", "data" | "text" | "base64"}``,
    then the close as ``{"t", "from", "code", "reason"}``."""
    out: dict[str, Any] = {
        "messages": [
            {"t": round(m.t, 4), "from": m.side, _PAYLOAD_FIELDS[m.payload.kind]: m.payload.value}
            for m in conv.messages
        ]
    }
    if conv.close is not None:
        c = conv.close
        out["close"] = {"t": round(c.t, 4), "from": c.side, "code": c.code, "reason": c.reason}
    return out


def response_to_dict(resp: RecordedResponse, events_mark: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"status": resp.status}
    if resp.recorded_at:
        out["recorded_at"] = resp.recorded_at
    out["headers"] = resp.headers
    if resp.stream is not None:
        out["stream"] = {
            "format": resp.stream.format,
            "complete": resp.stream.complete,
            **({"cut": resp.stream.cut} if resp.stream.cut else {}),
            "events": [events_mark]
            if events_mark is not None
            else [event_to_dict(ev) for ev in resp.stream.events],
        }
    elif resp.websocket is not None:
        out["websocket"] = websocket_to_dict(resp.websocket)
    else:
        out.update(_body_fields(resp.body))
    return out


def to_dict(rec: Recording, mark_events: bool = False) -> dict[str, Any]:
    websocket = any(r.websocket is not None for r in rec.responses)
    binary = any(r.stream is not None and r.stream.format == "eventstream" for r in rec.responses)
    out: dict[str, Any] = {
        "format": FORMAT_NAME,
        "version": EVENTSTREAM_VERSION
        if binary
        else WEBSOCKET_VERSION
        if websocket
        else HTTP_VERSION,
    }
    if rec.test_id:
        out["test_id"] = rec.test_id
    out["request"] = {
        "method": rec.request.method,
        "url": rec.request.url,
        **({"any_host": True} if rec.request.any_host else {}),
        "headers": rec.request.headers,
        **_body_fields(rec.request.body),
    }
    out["responses"] = [
        response_to_dict(r, _EVENTS_MARK.format(i) if mark_events else None)
        for i, r in enumerate(rec.responses)
    ]
    if rec.llama_stack and rec.llama_stack.get("request"):
        out["llama_stack"] = {"request": rec.llama_stack["request"]}
    return out


def write(rec: Recording, out: BinaryIO) -> None:
    """Write the cassette to ``out`` one event at a time.

    The same bytes as one ``orjson.dumps`` of the whole document, but a long stream is never
    held as one tree of objects plus one buffer: each event is parsed and written on its own.
    """
    head = orjson.dumps(to_dict(rec, mark_events=True), option=orjson.OPT_INDENT_2)
    for i, resp in enumerate(rec.responses):
        if resp.stream is None:
            continue
        mark = orjson.dumps(_EVENTS_MARK.format(i))
        at = head.index(mark)
        line_start = head.rindex(b"\n", 0, at) + 1
        indent = b"\n" + head[line_start:at]
        out.write(head[:at])
        for n, ev in enumerate(resp.stream.events):
            if n:
                out.write(b"," + indent)
            out.write(
                orjson.dumps(event_to_dict(ev), option=orjson.OPT_INDENT_2).replace(b"\n", indent)
            )
        head = head[at + len(mark) :]
    out.write(head)
    out.write(b"\n")


def dumps(rec: Recording) -> bytes:
    buf = io.BytesIO()
    write(rec, buf)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Reading


def _body_from(obj: dict[str, Any], where: str, path: Path | str | None) -> Body | None:
    found = [(kind, obj[name]) for kind, name in BODY_FIELDS.items() if name in obj]
    require(len(found) <= 1, path, f"{where} has more than one of body / body_text / body_base64")
    if not found:
        return None
    kind, value = found[0]
    if kind == "multipart":
        require(
            isinstance(value, list) and all(isinstance(p, dict) for p in value),
            path,
            f"{where}.body_multipart must be a list of objects",
        )
    elif kind != "json":
        require(isinstance(value, str), path, f"{where}.{BODY_FIELDS[kind]} must be a string")
    if kind == "base64":
        _require_base64(value, path, f"{where}.body_base64")
    return Body(kind, value)


def _require_base64(value: str, path: Path | str | None, where: str) -> None:
    try:
        base64.b64decode(value, validate=True)
    except ValueError:
        raise CassetteError(path, f"{where} is not valid base64") from None


def _message_from(obj: Any, where: str, path: Path | str | None) -> WebSocketMessage:
    require(isinstance(obj, dict), path, f"{where} must be an object")
    t = time_offset(obj, where, path)
    require(obj.get("from") in _SIDES, path, f"{where}.from must be 'client' or 'server'")
    found = [(kind, obj[name]) for kind, name in _PAYLOAD_FIELDS.items() if name in obj]
    require(len(found) == 1, path, f"{where} must have exactly one of data / text / base64")
    kind, value = found[0]
    if kind == "json":
        require(
            isinstance(value, (dict, list)),
            path,
            f"{where}.data must be a JSON object or array (other text goes in 'text')",
        )
    else:
        require(isinstance(value, str), path, f"{where}.{_PAYLOAD_FIELDS[kind]} must be a string")
    if kind == "base64":
        _require_base64(value, path, f"{where}.base64")
    return WebSocketMessage(side=obj["from"], payload=Body(kind, value), t=t)


def _close_from(obj: Any, where: str, path: Path | str | None) -> WebSocketClose:
    require(isinstance(obj, dict), path, f"{where} must be an object")
    t = time_offset(obj, where, path)
    require(obj.get("from") in _SIDES, path, f"{where}.from must be 'client' or 'server'")
    code = obj.get("code")
    require(
        isinstance(code, int) and not isinstance(code, bool) and 1000 <= code <= 4999,
        path,
        f"{where}.code must be a WebSocket close code (1000-4999)",
    )
    require(isinstance(obj.get("reason", ""), str), path, f"{where}.reason must be a string")
    return WebSocketClose(side=obj["from"], code=code, reason=obj.get("reason", ""), t=t)


def _websocket_from(obj: Any, where: str, path: Path | str | None) -> WebSocketConversation:
    require(isinstance(obj, dict), path, f"{where} must be an object")
    messages = obj.get("messages")
    require(isinstance(messages, list), path, f"{where}.messages must be a list")
    close = obj.get("close")
    return WebSocketConversation(
        messages=[_message_from(m, f"{where}.messages[{i}]", path) for i, m in enumerate(messages)],
        close=None if close is None else _close_from(close, f"{where}.close", path),
    )


def _response_from(obj: Any, where: str, path: Path | str | None) -> RecordedResponse:
    require(isinstance(obj, dict), path, f"{where} must be an object")
    status = obj.get("status")
    require(
        isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 599,
        path,
        f"{where}.status must be an HTTP status code",
    )
    headers = obj.get("headers", [])
    require(
        isinstance(headers, list)
        and all(
            isinstance(h, list) and len(h) == 2 and all(isinstance(x, str) for x in h)
            for h in headers
        ),
        path,
        f"{where}.headers must be a list of [name, value] string pairs",
    )
    stream = None
    if "stream" in obj:
        s = obj["stream"]
        require(isinstance(s, dict), path, f"{where}.stream must be an object")
        require(
            s.get("format") in ("sse", "ndjson", "eventstream"),
            path,
            f"{where}.stream.format must be 'sse', 'ndjson' or 'eventstream'",
        )
        require(
            isinstance(s.get("complete", True), bool),
            path,
            f"{where}.stream.complete must be true or false",
        )
        require(
            s.get("cut") is None or isinstance(s.get("cut"), str),
            path,
            f"{where}.stream.cut must be a string",
        )
        events = s.get("events")
        require(isinstance(events, list), path, f"{where}.stream.events must be a list")
        stream = Stream(
            format=s["format"],
            events=[
                event_from(e, f"{where}.stream.events[{i}]", path, s["format"] == "eventstream")
                for i, e in enumerate(events)
            ],
            complete=s.get("complete", True),
            cut=s.get("cut"),
        )
    body = _body_from(obj, where, path)
    require(stream is None or body is None, path, f"{where} has both a stream and a body")
    websocket = None
    if "websocket" in obj:
        require(
            status == 101 and stream is None and body is None,
            path,
            f"{where}.websocket belongs to a 101 answer with no body or stream",
        )
        websocket = _websocket_from(obj["websocket"], f"{where}.websocket", path)
    require(
        status != 101 or websocket is not None,
        path,
        f"{where} is a 101 answer with no 'websocket' section (it holds only the "
        "handshake, as recorded before WebSocket support): record it again",
    )
    recorded_at = obj.get("recorded_at")
    require(
        recorded_at is None or isinstance(recorded_at, str),
        path,
        f"{where}.recorded_at must be a string",
    )
    return RecordedResponse(
        status=status,
        headers=[list(h) for h in headers],
        body=body,
        stream=stream,
        websocket=websocket,
        recorded_at=recorded_at,
    )


def is_ours(doc: Any) -> bool:
    return isinstance(doc, dict) and "version" in doc


def request_from(doc: Any, path: Path | str | None = None) -> tuple[RecordedRequest, str | None]:
    """The request of one of our cassettes and its test id, checked with the version."""
    require(isinstance(doc, dict), path, "top level must be a JSON object")
    version = doc.get("version")
    require(
        isinstance(version, int) and not isinstance(version, bool),
        path,
        "missing or non-integer 'version'",
    )
    require(
        version <= FORMAT_VERSION,
        path,
        f"format version {version} is newer than this tool reads ({FORMAT_VERSION}); upgrade",
    )
    req = doc.get("request")
    require(isinstance(req, dict), path, "'request' must be an object")
    require(
        isinstance(req.get("method"), str) and req["method"],
        path,
        "request.method must be a string",
    )
    require(
        isinstance(req.get("url"), str) and "://" in req["url"],
        path,
        "request.url must be an absolute URL",
    )
    headers = req.get("headers", {})
    require(
        isinstance(headers, dict) and all(isinstance(v, str) for v in headers.values()),
        path,
        "request.headers must be an object of strings",
    )
    require(
        isinstance(req.get("any_host", False), bool), path, "request.any_host must be true or false"
    )
    test_id = doc.get("test_id")
    require(test_id is None or isinstance(test_id, str), path, "test_id must be a string")
    request = RecordedRequest(
        method=req["method"].upper(),
        url=req["url"],
        headers={k.lower(): v for k, v in headers.items()},
        body=_body_from(req, "request", path),
        any_host=req.get("any_host", False),
    )
    return request, test_id


def from_dict(doc: Any, path: Path | str | None = None) -> Recording:
    """Read one of our cassettes, checking every field; errors name the file and the field."""
    request, test_id = request_from(doc, path)
    responses = doc.get("responses")
    require(isinstance(responses, list) and responses, path, "'responses' must be a non-empty list")
    origin = doc.get("llama_stack")
    require(
        origin is None or (isinstance(origin, dict) and isinstance(origin.get("request"), dict)),
        path,
        "llama_stack must be an object with a 'request' object",
    )
    return Recording(
        request=request,
        responses=[_response_from(r, f"responses[{i}]", path) for i, r in enumerate(responses)],
        test_id=test_id,
        llama_stack=origin,
    )
