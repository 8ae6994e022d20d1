"""One redaction step over a whole recording, right before it is written: ``scrub``.

It walks everything a cassette holds: the URL (user info, query values), request and response
headers, every body kind (JSON at any depth, forms, multipart fields, text; base64 bodies are
bytes and left alone), every stream event (data, comments, id, name, an event stream's headers,
and what a chunk's ``bytes`` member holds in base64: ``eventstream.scrubbed_member``), the cut
reason, the llama-stack metadata, the test id. Two passes, the layers of ``secret_rules``:

1. by name: secret headers, fields and parameters are replaced by ``REDACTED`` (in JSON that is
   itself a string too, ``embedded``), and the strings they held become known secrets;
2. by value and by shape: known secrets (in any of their forms) and well-known key formats are
   replaced inside every string, JSON keys included, and in the text a stream's events (or a
   conversation's server messages) spell together (``spelled.across``).

Each change is a ``Finding``: the JSON path in the file, the layer, and what was found (never
the secret). The proxy runs ``scrub`` on the writer's thread, ``cassette import-llama-stack``
before writing, ``cassette scrub`` on files in place and ``cassette verify`` as a dry run;
``scrub_document`` is the same step for a file kept in llama-stack's format. ``matching``
compares requests through the ``*_for_matching`` helpers, which leave out and replace exactly
what ``scrub`` does, so a scrubbed recording still matches the live request it came from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import orjson

from proxy_addon.bodies import eventstream
from proxy_addon.bodies.sse import Event, Unparsed, parse_data
from proxy_addon.formats.cassette import BODY_FIELDS
from proxy_addon.matching.jsonpath import format_path
from proxy_addon.model import (
    Body,
    RecordedResponse,
    Recording,
    Stream,
    WebSocketConversation,
    WebSocketMessage,
)
from proxy_addon.redaction import embedded, spelled
from proxy_addon.redaction.secret_rules import REDACTED, Secrets, credential_values, param_values

Layer = Literal["name", "value", "shape"]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Finding:
    """A secret found in a recording: where (a JSON path in the file), by which layer, what."""

    path: str
    layer: Layer
    what: str

    def __str__(self) -> str:
        return f"{self.path}: {self.what} (by {self.layer})"


# -- the scrub ---------------------------------------------------------------------------------


class _Pass:
    """One pass over a recording: by name (collecting what it removes), or by value and shape.
    Unchanged parts are returned as they are (the same objects), so a caller can tell.
    ``drop``: a JSON field found by name is left out rather than replaced (for matching)."""

    def __init__(self, secrets: Secrets, by_name: bool, drop: bool = False) -> None:
        self.secrets = secrets
        self.by_name = by_name
        self.drop = drop
        self.findings: list[Finding] = []
        self.removed: list[str] = []  # strings layer 1 replaced: known secrets for layer 2
        self.path: list[str | int] = []

    def _found(self, layer: Layer, what: str) -> None:
        self.findings.append(Finding(format_path(self.path), layer, what))

    def named(self, value: Any, what: str, header: str = "") -> Any:
        """A value found by its name: replaced; the strings it held become known secrets."""
        if value is None or value == "" or value == REDACTED:
            return value
        if isinstance(value, str):
            self.removed.extend(credential_values(value, header))
        self._found("name", what)
        return REDACTED

    def text(self, text: str) -> str:
        if self.by_name:
            return self.embedded(text)
        if not self.secrets.might_hold(text):  # one RE2 scan, then re's
            return text
        new, hits = self.secrets.replace(text)
        for layer, what in hits:
            self._found(layer, what)  # type: ignore[arg-type]
        return text if new == text else new

    def embedded(self, text: str) -> str:
        """A string holding a JSON object or array: the strings under secret names in it
        replaced, the string otherwise as it was (its spacing and order kept)."""
        named = embedded.embedded_secrets(text, self.secrets)
        for key, value in named:
            self.removed.extend(credential_values(value))
            self._found("name", f"field {key}, in JSON inside the string")
        return embedded.replace_tokens(text, [v for _, v in named]) if named else text

    def across(self, found: tuple[list[T], list[spelled.Hit]], noun: str) -> list[T]:
        """Events or messages from ``spelled``, and a finding for each secret they spelled."""
        items, hits = found
        for path, first, last, layer, what in hits:
            if first != last:
                what = f"{what}, spelled across {noun} {first} to {last}"
            self.findings.append(Finding(format_path([*self.path, *path]), layer, what))  # type: ignore[arg-type]
        return items

    def at(self, key: str | int, scrub: Any, value: Any, *args: Any) -> Any:
        self.path.append(key)
        try:
            return scrub(value, *args)
        finally:
            self.path.pop()

    def each(self, key: str, items: list[T], scrub: Callable[[T], T]) -> list[T]:
        """``items`` (under ``key``) each scrubbed; the same list when none changed."""
        changed: list[T] | None = None
        self.path.append(key)
        for i, item in enumerate(items):
            new = self.at(i, scrub, item)
            if new is not item:
                changed = changed if changed is not None else list(items)
                changed[i] = new
        self.path.pop()
        return changed if changed is not None else items

    # -- JSON, at any depth ----------------------------------------------------------------

    def json(self, value: Any, root: int | None, urls: bool = False) -> Any:
        """A JSON value whose document starts at ``self.path[root:]`` (``None``: match no
        ``cassette_redact_fields`` path); ``urls``: a ``url`` field is a URL (foreign files)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            items: list[Any] | None = None
            for i, v in enumerate(value):
                new = self.at(i, self.json, v, root, urls)
                if new is not v:
                    items = items if items is not None else list(value)
                    items[i] = new
            return value if items is None else items
        if not isinstance(value, dict):
            return value
        items = []
        changed = False
        # an object under a secret name ({"client_secret": {"value": "ek_...", "expires_at": 1}})
        # holds its secret in ``value``; anything else in it is walked as usual
        parent = self.path[-1] if self.path else None
        holder = isinstance(parent, str) and self.secrets.is_secret_key(parent)
        for k, v in value.items():
            self.path.append(k)
            if self.by_name and (
                (holder and k == "value" and isinstance(v, str))
                or self.secrets.is_secret_field(k, v, None if root is None else self.path[root:])
            ):
                new = self.named(v, f"field {k}")
                if self.drop:
                    self.path.pop()
                    changed = True
                    continue
            elif urls and k == "url" and isinstance(v, str):
                new = self.url(v)
            else:
                new = self.json(v, root, urls)
            key = k if self.by_name else self.text(k)
            self.path.pop()
            items.append((key, new))
            changed = changed or new is not v or key is not k
        return dict(items) if changed else value

    # -- URL, headers, bodies --------------------------------------------------------------

    def url(self, url: str) -> str:
        try:
            parts = urlsplit(url)
        except ValueError:
            return self.text(url)
        netloc = parts.netloc
        if self.by_name and "@" in netloc:
            userinfo, _, netloc = netloc.rpartition("@")
            user, _, password = userinfo.partition(":")
            self.removed.append(unquote(password or user))
            self._found("name", "user info")
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            new = [(k, self.param(k, v, "query parameter")) for k, v in pairs]
            if new != pairs:
                query = urlencode(new, safe="<>")
        path, fragment = parts.path, parts.fragment
        if not self.by_name:
            path, fragment = self.text(path), self.text(fragment)
        out = urlunsplit((parts.scheme, netloc, path, query, fragment))
        return url if out == url else out

    def param(self, name: str, value: str, kind: str) -> str:
        """A query parameter, form field or multipart field."""
        if not self.by_name:
            return self.text(value)
        return self.named(value, f"{kind} {name}") if self.secrets.is_secret_param(name) else value

    def header(self, name: str, value: str) -> str:
        if not self.secrets.is_secret_header(name):
            return self.text(value)
        return self.named(value, f"header {name}", name) if self.by_name else value

    def request_headers(self, headers: dict[str, str]) -> dict[str, str]:
        new = {k: self.at(k, self.header, k, v) for k, v in headers.items()}
        return headers if all(new[k] is v for k, v in headers.items()) else new

    def header_list(self, headers: list[list[Any]]) -> list[list[Any]]:
        """A response's headers, or an event stream message's (typed values left as they are)."""
        new = []
        for i, header in enumerate(headers):
            if len(header) == 2 and isinstance(header[1], str):
                self.path.extend((i, 1))
                value = self.header(header[0], header[1])
                del self.path[-2:]
                header = [header[0], value] if value is not header[1] else header
            new.append(header)
        return headers if all(a is b for a, b in zip(new, headers)) else new

    def body(self, body: Body | None, content_type: str | None) -> Body | None:
        if body is None or body.kind == "base64":  # bytes: left as they are
            return body
        self.path.append(BODY_FIELDS[body.kind])
        if body.kind == "json":
            new = (
                self.json(body.value, len(self.path))
                if self._may_change(body.value)
                else body.value
            )
        elif body.kind == "multipart":
            new = self.multipart(body.value)
        elif content_type and "x-www-form-urlencoded" in content_type.lower():
            new = self.form(body.value)
        else:
            new = self.text(body.value)
        self.path.pop()
        return body if new is body.value else Body(body.kind, new)

    def form(self, text: str) -> str:
        pairs = parse_qsl(text, keep_blank_values=True)
        new = [(k, self.param(k, v, "form field")) for k, v in pairs]
        return text if new == pairs else urlencode(new, safe="<>")

    def multipart(self, parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = list(parts)
        for i, part in enumerate(parts):
            if isinstance(part.get("value"), str):  # a field (files are kept as hashes)
                self.path.extend((i, "value"))
                value = self.param(str(part.get("name")), part["value"], "multipart field")
                del self.path[-2:]
                if value is not part["value"]:
                    out[i] = dict(part, value=value)
        return parts if all(a is b for a, b in zip(out, parts)) else out

    # -- streams ---------------------------------------------------------------------------

    def payload(self, data: Any) -> Any:
        """An event's payload (or a WebSocket message's): parsed JSON, a string, or text still
        unparsed, which is parsed only when it may hold a secret."""
        if isinstance(data, Unparsed):
            if not self.secrets.paths and not self.secrets.might_hold(data):
                return data
            parsed = parse_data(data)
            try:
                new = self.json(parsed, len(self.path))
            except RecursionError:  # nested deeper than Python walks: scrubbed as text
                return self.text(str(data))
            return data if new is parsed else new
        return self.json(data, len(self.path)) if self._may_change(data) else data

    def _may_change(self, value: Any) -> bool:
        """Whether a JSON value can hold anything this pass changes: one scan of its text
        spares walking a large body or a stream read back from disk."""
        if self.secrets.paths or isinstance(value, str):
            return True
        try:
            return self.secrets.might_hold(orjson.dumps(value))
        except (orjson.JSONEncodeError, RecursionError):
            return True

    def event(self, ev: Event) -> Event:
        if ev.headers is None:
            new = {"data": self.at("data", self.payload, ev.data)}
        else:  # an event stream's message: its ``bytes`` member read even where still base64
            new = {"data": self.at("data", eventstream.scrubbed_member, ev.data, self.payload)}
        new["comments"] = self.each("comments", ev.comments, self.text)
        new["event"] = self.at("event", self.text, ev.event) if ev.event is not None else None
        new["id"] = self.at("id", self.text, ev.id) if ev.id is not None else None
        new["headers"] = ev.headers and self.at("headers", self.header_list, ev.headers)
        same = all(value is getattr(ev, name) for name, value in new.items())
        return ev if same else dataclasses.replace(ev, **new)

    def stream(self, stream: Stream) -> Stream:
        events = stream.events
        if not self.by_name:  # first: one event's scan could take a piece for a whole key
            events = self.across(spelled.in_events(events, self.secrets), "events")
        events = self.each("events", events, self.event)
        cut = self.at("cut", self.text, stream.cut) if stream.cut else stream.cut
        if events is stream.events and cut is stream.cut:
            return stream
        return Stream(stream.format, events, stream.complete, cut)

    def message(self, message: WebSocketMessage) -> WebSocketMessage:
        """A WebSocket message's payload, as the file holds it (``data``, ``text``; binary
        messages are left as they are, like base64 bodies)."""
        payload = message.payload
        if payload.kind not in spelled.MESSAGE_FIELDS:
            return message
        scrub = self.payload if payload.kind == "json" else self.text
        value = self.at(spelled.MESSAGE_FIELDS[payload.kind], scrub, payload.value)
        if value is payload.value:
            return message
        return dataclasses.replace(message, payload=Body(payload.kind, value))

    def websocket(self, conversation: WebSocketConversation) -> WebSocketConversation:
        messages = conversation.messages
        if not self.by_name:
            messages = self.across(spelled.in_messages(messages, self.secrets), "messages")
        messages = self.each("messages", messages, self.message)
        close = conversation.close
        if close is not None and close.reason:
            self.path.append("close")
            reason = self.at("reason", self.text, close.reason)
            self.path.pop()
            close = close if reason is close.reason else dataclasses.replace(close, reason=reason)
        if messages is conversation.messages and close is conversation.close:
            return conversation
        return WebSocketConversation(messages, close)

    # -- a whole recording -----------------------------------------------------------------

    def response(self, resp: RecordedResponse) -> RecordedResponse:
        headers = self.at("headers", self.header_list, resp.headers)
        content_type = next((v for k, v in resp.headers if k == "content-type"), None)
        body = self.body(resp.body, content_type)
        stream = self.at("stream", self.stream, resp.stream) if resp.stream is not None else None
        socket = (
            self.at("websocket", self.websocket, resp.websocket)
            if resp.websocket is not None
            else None
        )
        new = {"headers": headers, "body": body, "stream": stream, "websocket": socket}
        if all(value is getattr(resp, name) for name, value in new.items()):
            return resp
        return dataclasses.replace(resp, **new)

    def recording(self, rec: Recording) -> Recording:
        req = rec.request
        self.path[:] = ["request"]
        url = self.at("url", self.url, req.url)
        headers = self.at("headers", self.request_headers, req.headers)
        body = self.body(req.body, req.content_type)
        self.path[:] = ["responses"]
        responses = [self.at(i, self.response, r) for i, r in enumerate(rec.responses)]
        self.path[:] = []
        meta = self.at("llama_stack", self.json, rec.llama_stack, None, True)
        test_id = self.at("test_id", self.text, rec.test_id) if rec.test_id else rec.test_id
        request = (
            req
            if url is req.url and headers is req.headers and body is req.body
            else dataclasses.replace(req, url=url, headers=headers, body=body)
        )
        if (
            request is req
            and meta is rec.llama_stack
            and test_id is rec.test_id
            and all(a is b for a, b in zip(responses, rec.responses))
        ):
            return rec
        return dataclasses.replace(
            rec, request=request, responses=responses, llama_stack=meta, test_id=test_id
        )


def _both_passes[T](
    value: T, secrets: Secrets, step: Callable[[_Pass, T], T]
) -> tuple[T, list[Finding]]:
    """``step`` by name, then by value and shape knowing what the first pass removed."""
    first = _Pass(secrets, by_name=True)
    named = step(first, value)
    second = _Pass(secrets.with_values(first.removed), by_name=False)
    return step(second, named), first.findings + second.findings


def scrub(rec: Recording, secrets: Secrets) -> tuple[Recording, list[Finding]]:
    """``rec`` with every secret replaced by ``REDACTED`` (the same object when it held none),
    and where each was. ``secrets`` may already know values (the flow's own key)."""
    return _both_passes(rec, secrets, _Pass.recording)


def scrub_document(doc: Any, secrets: Secrets) -> tuple[Any, list[Finding]]:
    """The same step for a file kept in a format we only read (llama-stack's): the document
    as JSON, secret names at any depth, ``url`` fields as URLs, every string by value and
    shape; paths are the file's own."""
    return _both_passes(doc, secrets, lambda p, v: p.json(v, None, urls=True))


# -- the same rules where requests are compared, and where they are printed --------------------


def redact_url(url: str, secrets: Secrets) -> str:
    """A URL as it may be shown: no user info, secret query values and known secrets
    replaced."""
    return _both_passes(url, secrets, _Pass.url)[0]


def json_for_matching(value: Any, secrets: Secrets, named: list[str]) -> Any:
    """A JSON body as requests are compared: secret fields (by name at any depth, and the
    ``cassette_redact_fields`` paths) left out, and known values and shapes in strings and keys
    replaced as ``scrub`` replaces them in the file. The strings the secret fields held are
    appended to ``named``: the scrub knows them for the whole recording (its URL too). Worth
    calling only where ``secrets.might_hold`` said yes, or ``secrets.paths`` is set."""
    first = _Pass(secrets, by_name=True, drop=True)
    without_fields = first.json(value, 0)
    named.extend(first.removed)
    return _Pass(secrets.with_values(first.removed), by_name=False).json(without_fields, 0)


def pair_values_for_matching(
    pairs: list[tuple[str, str]], secrets: Secrets, named: list[str]
) -> list[str | None]:
    """Query, form or multipart fields' values as compared: None for a secret field (left
    out), the others with known values and shapes replaced as ``scrub`` replaces them; the
    secret fields' strings appended to ``named``. Each decoded value is scanned: a shape
    percent-encoded in the raw query shows only decoded."""
    own = param_values(pairs, secrets)
    named.extend(own)
    known = secrets.with_values(own)
    return [
        None if secrets.is_secret_param(k) else known.replace(v)[0] if known.might_hold(v) else v
        for k, v in pairs
    ]
