"""The cassette format: the model, and its (de)serialisation with orjson.

One file holds one distinct request and the responses recorded for it, in order. Files are
pretty-printed with a fixed field order (our own fields in a fixed order, provider payloads in
the order the provider sent them) so re-recording the same traffic gives a small git diff.

llama-stack's test-recorder files are read into the same model (``llama_stack.read``, reached
through ``loads``), so the store, the matcher and the replayer never need to know which format
a file was in.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal, Sequence
from urllib.parse import urlsplit

import orjson

from proxy_addon import matching
from proxy_addon.sse import Event, StreamFormat, parsed

FORMAT_VERSION = 1
FORMAT_NAME = "llm-cassette"

BodyKind = Literal["json", "text", "base64", "multipart"]
_BODY_FIELDS: dict[BodyKind, str] = {"json": "body", "text": "body_text", "base64": "body_base64",
                                     "multipart": "body_multipart"}

_BINARY_MIME_PREFIXES = ("audio/", "image/", "video/", "application/octet-stream",
                         "application/pdf", "application/zip")


class CassetteError(ValueError):
    """A file that cannot be read as a cassette; the message names the file and the reason."""

    def __init__(self, path: Path | str | None, reason: str) -> None:
        self.path = str(path) if path is not None else None
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path is not None else reason)


# ---------------------------------------------------------------------------------------------
# Model


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
            parts = matching.multipart_parts(content_type or "", raw)
            if parts is not None:
                return cls("multipart", parts)
        if mime.startswith(_BINARY_MIME_PREFIXES):
            return cls("base64", base64.b64encode(raw).decode())
        if raw.lstrip()[:1] in (b"{", b"["):
            try:
                value = orjson.loads(raw)
                orjson.dumps(value)  # nested deeper than orjson writes: keep it as text
                return cls("json", value)
            except (orjson.JSONDecodeError, orjson.JSONEncodeError):
                pass
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return cls("base64", base64.b64encode(raw).decode())
        if "\x00" in text:
            return cls("base64", base64.b64encode(raw).decode())
        return cls("text", text)

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
    """A streamed body split into events. ``complete`` is False when it was cut off."""

    format: StreamFormat
    events: list[Event]
    complete: bool = True


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

    def canonical(self, ignore: Sequence[tuple[str | int, ...]] = ()) -> matching.CanonicalRequest:
        parts = urlsplit(self.url)
        if self.body is None:
            body = None
        elif self.body.kind == "json":
            body = matching.canonical_json(self.body.value, ignore)
        elif self.body.kind == "multipart":
            body = matching.canonical_multipart(self.body.value)
        else:
            body = matching.canonical_body(self.content_type, self.body.to_bytes(), ignore)
        return matching.CanonicalRequest(
            method=self.method.upper(),
            host="" if self.any_host else matching.normalise_host(
                parts.scheme, parts.hostname or "", parts.port),
            path=parts.path or "/",
            query=matching.canonical_query(parts.query),
            body=body,
        )


@dataclass(slots=True)
class RecordedResponse:
    status: int
    headers: list[list[str]] = field(default_factory=list)
    body: Body | None = None
    stream: Stream | None = None
    recorded_at: str | None = None
    # what a replay sends, built once: (headers, body bytes); not part of the format
    wire: tuple[list[tuple[bytes, bytes]], bytes] | None = field(
        default=None, repr=False, compare=False)

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for k, v in self.headers:
            if k.lower() == lowered:
                return v
        return None


@dataclass(slots=True)
class Recording:
    request: RecordedRequest
    responses: list[RecordedResponse]
    test_id: str | None = None
    source: Literal["cassette", "llama-stack"] = "cassette"
    # What a llama-stack file said beyond the wire exchange (type names, endpoint, tool), kept
    # so that an export writes back what llama-stack's recorder would load.
    llama_stack: dict[str, Any] | None = None


# ---------------------------------------------------------------------------------------------
# Writing


def _body_fields(body: Body | None) -> dict[str, Any]:
    return {} if body is None else {_BODY_FIELDS[body.kind]: body.value}


def event_to_dict(ev: Event) -> dict[str, Any]:
    out: dict[str, Any] = {"t": round(ev.t, 4)}
    if ev.comments:
        out["comments"] = ev.comments
    if ev.event is not None:
        out["event"] = ev.event
    if ev.id is not None:
        out["id"] = ev.id
    if ev.retry is not None:
        out["retry"] = ev.retry
    if ev.data is not None:
        out["data"] = parsed(ev)
    return out


_EVENTS_MARK = "\x00events of response {}\x00"


def response_to_dict(resp: RecordedResponse, events_mark: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"status": resp.status}
    if resp.recorded_at:
        out["recorded_at"] = resp.recorded_at
    out["headers"] = resp.headers
    if resp.stream is not None:
        out["stream"] = {
            "format": resp.stream.format,
            "complete": resp.stream.complete,
            "events": [events_mark] if events_mark is not None else
            [event_to_dict(ev) for ev in resp.stream.events],
        }
    else:
        out.update(_body_fields(resp.body))
    return out


def to_dict(rec: Recording, mark_events: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"format": FORMAT_NAME, "version": FORMAT_VERSION}
    if rec.test_id:
        out["test_id"] = rec.test_id
    out["request"] = {
        "method": rec.request.method,
        "url": rec.request.url,
        **({"any_host": True} if rec.request.any_host else {}),
        "headers": rec.request.headers,
        **_body_fields(rec.request.body),
    }
    out["responses"] = [response_to_dict(r, _EVENTS_MARK.format(i) if mark_events else None)
                        for i, r in enumerate(rec.responses)]
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
            out.write(orjson.dumps(event_to_dict(ev), option=orjson.OPT_INDENT_2)
                      .replace(b"\n", indent))
        head = head[at + len(mark):]
    out.write(head)
    out.write(b"\n")


def dumps(rec: Recording) -> bytes:
    buf = io.BytesIO()
    write(rec, buf)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Reading


def require(cond: bool, path: Path | str | None, reason: str) -> None:
    """Raise ``CassetteError`` naming the file unless ``cond`` holds (both readers use it)."""
    if not cond:
        raise CassetteError(path, reason)


def _body_from(obj: dict[str, Any], where: str, path: Path | str | None) -> Body | None:
    found = [(kind, obj[name]) for kind, name in _BODY_FIELDS.items() if name in obj]
    require(len(found) <= 1, path, f"{where} has more than one of body / body_text / body_base64")
    if not found:
        return None
    kind, value = found[0]
    if kind == "multipart":
        require(isinstance(value, list) and all(isinstance(p, dict) for p in value), path,
                f"{where}.body_multipart must be a list of objects")
    elif kind != "json":
        require(isinstance(value, str), path, f"{where}.{_BODY_FIELDS[kind]} must be a string")
    if kind == "base64":
        try:
            base64.b64decode(value, validate=True)
        except ValueError:
            raise CassetteError(path, f"{where}.body_base64 is not valid base64") from None
    return Body(kind, value)


def _event_from(obj: Any, where: str, path: Path | str | None) -> Event:
    require(isinstance(obj, dict), path, f"{where} must be an object")
    t = obj.get("t", 0.0)
    require(isinstance(t, (int, float)) and not isinstance(t, bool) and t >= 0, path,
            f"{where}.t must be a non-negative number")
    for name in ("event", "id"):
        require(obj.get(name) is None or isinstance(obj.get(name), str), path,
                f"{where}.{name} must be a string")
    retry = obj.get("retry")
    require(retry is None or (isinstance(retry, int) and not isinstance(retry, bool)), path,
            f"{where}.retry must be an integer")
    comments = obj.get("comments", [])
    require(isinstance(comments, list) and all(isinstance(c, str) for c in comments), path,
            f"{where}.comments must be a list of strings")
    return Event(data=obj.get("data"), event=obj.get("event"), id=obj.get("id"), retry=retry,
                 comments=list(comments), t=float(t))


def _response_from(obj: Any, where: str, path: Path | str | None) -> RecordedResponse:
    require(isinstance(obj, dict), path, f"{where} must be an object")
    status = obj.get("status")
    require(isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 599,
            path, f"{where}.status must be an HTTP status code")
    headers = obj.get("headers", [])
    require(isinstance(headers, list) and all(
        isinstance(h, list) and len(h) == 2 and all(isinstance(x, str) for x in h) for h in headers
    ), path, f"{where}.headers must be a list of [name, value] string pairs")
    stream = None
    if "stream" in obj:
        s = obj["stream"]
        require(isinstance(s, dict), path, f"{where}.stream must be an object")
        require(s.get("format") in ("sse", "ndjson"), path,
                f"{where}.stream.format must be 'sse' or 'ndjson'")
        require(isinstance(s.get("complete", True), bool), path,
                f"{where}.stream.complete must be true or false")
        events = s.get("events")
        require(isinstance(events, list), path, f"{where}.stream.events must be a list")
        stream = Stream(
            format=s["format"],
            events=[_event_from(e, f"{where}.stream.events[{i}]", path) for i, e in enumerate(events)],
            complete=s.get("complete", True),
        )
    body = _body_from(obj, where, path)
    require(stream is None or body is None, path, f"{where} has both a stream and a body")
    recorded_at = obj.get("recorded_at")
    require(recorded_at is None or isinstance(recorded_at, str), path,
            f"{where}.recorded_at must be a string")
    return RecordedResponse(status=status, headers=[list(h) for h in headers], body=body,
                            stream=stream, recorded_at=recorded_at)


def from_dict(doc: Any, path: Path | str | None = None) -> Recording:
    """Read one of our cassettes, checking every field; errors name the file and the field."""
    require(isinstance(doc, dict), path, "top level must be a JSON object")
    version = doc.get("version")
    require(isinstance(version, int) and not isinstance(version, bool), path,
            "missing or non-integer 'version'")
    require(version <= FORMAT_VERSION, path,
            f"format version {version} is newer than this tool reads ({FORMAT_VERSION}); upgrade")
    req = doc.get("request")
    require(isinstance(req, dict), path, "'request' must be an object")
    require(isinstance(req.get("method"), str) and req["method"], path,
            "request.method must be a string")
    require(isinstance(req.get("url"), str) and "://" in req["url"], path,
            "request.url must be an absolute URL")
    headers = req.get("headers", {})
    require(isinstance(headers, dict) and all(isinstance(v, str) for v in headers.values()), path,
            "request.headers must be an object of strings")
    require(isinstance(req.get("any_host", False), bool), path,
            "request.any_host must be true or false")
    responses = doc.get("responses")
    require(isinstance(responses, list) and responses, path,
            "'responses' must be a non-empty list")
    test_id = doc.get("test_id")
    require(test_id is None or isinstance(test_id, str), path, "test_id must be a string")
    origin = doc.get("llama_stack")
    require(origin is None or (isinstance(origin, dict) and isinstance(origin.get("request"), dict)),
            path, "llama_stack must be an object with a 'request' object")
    return Recording(
        request=RecordedRequest(
            method=req["method"].upper(),
            url=req["url"],
            headers={k.lower(): v for k, v in headers.items()},
            body=_body_from(req, "request", path),
            any_host=req.get("any_host", False),
        ),
        responses=[_response_from(r, f"responses[{i}]", path) for i, r in enumerate(responses)],
        test_id=test_id,
        llama_stack=origin,
    )


def is_llama_stack(doc: Any) -> bool:
    return (isinstance(doc, dict) and "version" not in doc and isinstance(doc.get("request"), dict)
            and isinstance(doc.get("response"), dict))


def loads(raw: bytes, path: Path | str | None = None) -> Recording:
    """Parse a file's bytes in either format; raise ``CassetteError`` naming the file."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise CassetteError(path, f"not valid JSON ({e})") from None
    if is_llama_stack(doc):
        from proxy_addon import llama_stack  # it builds on this module's model

        return llama_stack.read(doc, path)
    if isinstance(doc, dict) and "version" not in doc:
        raise CassetteError(path, "not a cassette: no 'version' field, and not a llama-stack "
                                  "recording (no 'request' and 'response' objects)")
    return from_dict(doc, path)


def load(path: Path) -> Recording:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CassetteError(path, f"cannot read ({e.strerror})") from None
    return loads(raw, path)
