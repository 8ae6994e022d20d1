"""Request canonicalisation and matching: pure functions, request in, key out.

Two requests match when method, host, path, query (without secret parameters) and body are the
same, where a JSON body is compared as data (key order and whitespace ignored) with secret fields
(at any depth) and the user's ``cassette_ignore`` paths removed. Known secret values and key
shapes inside strings are replaced as ``redact.scrub`` replaces them in a cassette, so a recording
matches the live request it was made from; an RE2 scan of each part (``Secrets.might_hold``)
keeps that free for a request with no secret in it. Then the strings of the JSON body and the
query values pass through the ``cassette_normalize`` normaliser (``normalize.py``) when there is
one. The path is
never normalised: it is the endpoint, which names the files and groups the recordings, and ids
in it come from earlier recorded answers, which a replay gives back as they were. Nothing here
touches mitmproxy or the disk.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Sequence
from urllib.parse import parse_qsl, urlsplit

import orjson

from proxy_addon.bodies import multipart
from proxy_addon.formats import exchange
from proxy_addon.matching.jsonpath import drop_path, map_leaves
from proxy_addon.matching.normalize import Normalizer
from proxy_addon.model import RecordedRequest, text_of
from proxy_addon.redaction import redact
from proxy_addon.redaction.secret_rules import BUILT_IN, Secrets

DEFAULT_PORTS = {"http": 80, "https": 443}
IgnorePaths = Sequence[tuple[str | int, ...]]


@dataclass(frozen=True)
class CanonicalRequest:
    """What identifies a request for matching. ``host`` is empty for host-agnostic recordings."""

    method: str
    host: str
    path: str
    query: tuple[tuple[str, str], ...] = ()
    body: Any = None

    def key(self) -> str:
        return self._key

    @cached_property
    def _key(self) -> str:  # computed once per request, however often it is looked up
        try:
            payload = orjson.dumps([self.method, self.host, self.path, self.query, self.body],
                                   option=orjson.OPT_SORT_KEYS)
        except (orjson.JSONEncodeError, RecursionError):  # nested deeper than orjson writes
            payload = repr([self.method, self.host, self.path, self.query, self.body]).encode()
        return hashlib.sha256(payload).hexdigest()

    def without_host(self) -> CanonicalRequest:
        return replace(self, host="")

    def any_host_key(self) -> str:
        """The key of this request as a host-agnostic recording (llama-stack's) is stored."""
        return self._any_host_key

    @cached_property
    def _any_host_key(self) -> str:
        return self.without_host().key() if self.host else self.key()

    def describe(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in self.query)
        return f"{self.method} {self.host}{self.path}" + (f"?{query}" if query else "")


# ---------------------------------------------------------------------------------------------
# Bodies


# A body may hold a float only where a digit is followed by "." or an exponent.
_FLOAT_HINT = re.compile(rb"\d[.eE]")
_EXACT_INT = 2**63  # orjson writes integers up to 64 bits


def _integral_as_int(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < _EXACT_INT:
        return int(value)
    return value


def integral_floats_as_ints(value: Any) -> Any:
    """``value`` with every float that is a whole number written as an int.

    JSON has one number type: ``1`` and ``1.0`` are the same value, and a client in another
    language may send either. Unchanged parts are shared, not copied."""
    return map_leaves(value, _integral_as_int)


def _json_body(value: Any, ignore: IgnorePaths, floats: bool, secrets: Secrets,
               scan: bool, normalize: Normalizer | None) -> Any:
    if floats:
        value = integral_floats_as_ints(value)
    if scan or secrets.paths:  # a secret field, value or shape may be in it
        value = redact.json_for_matching(value, secrets)
    for path in ignore:
        value = drop_path(value, path)
    if normalize is not None:
        value = normalize.value(value)
    return value


def _compared_pairs(pairs: list[tuple[str, str]], secrets: Secrets) -> list[tuple[str, str]]:
    values = redact.pair_values_for_matching(pairs, secrets)
    return [(k, v) for (k, _), v in zip(pairs, values) if v is not None]


def canonical_multipart(parts: list[dict[str, Any]],
                        secrets: Secrets = BUILT_IN) -> dict[str, Any]:
    fields = [(str(p.get("name")), p["value"]) for p in parts if isinstance(p.get("value"), str)]
    values = iter(redact.pair_values_for_matching(fields, secrets))
    kept = []
    for p in parts:
        if isinstance(p.get("value"), str):
            value = next(values)
            if value is None:  # a secret field
                continue
            p = p if value is p["value"] else dict(p, value=value)
        kept.append(p)
    return {"$multipart": sorted(kept, key=lambda p: (str(p.get("name")), str(p.get("filename"))))}


def _is_form(content_type: str | None) -> bool:
    return bool(content_type) and "application/x-www-form-urlencoded" in content_type.lower()


def _digest(raw: bytes) -> dict[str, str]:
    return {"$sha256": hashlib.sha256(raw).hexdigest()}


def canonical_body(content_type: str | None, raw: bytes | None, ignore: IgnorePaths = (),
                   secrets: Secrets = BUILT_IN, normalize: Normalizer | None = None) -> Any:
    """The comparable form of a body given as bytes (a live request): one scan of them says
    whether a secret key, known value or shape needs the walk."""
    if not raw:
        return None
    if content_type and content_type.lower().startswith("multipart/form-data"):
        parts = multipart.fields(content_type, raw)
        if parts is not None:
            return canonical_multipart(parts, secrets)
    if _is_form(content_type):
        pairs = parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
        return {"$form": sorted(_compared_pairs(pairs, secrets))}
    scan = secrets.might_hold(raw)
    if raw.lstrip()[:1] in (b"{", b"["):
        try:
            return _json_body(orjson.loads(raw), ignore, _FLOAT_HINT.search(raw) is not None,
                              secrets, scan, normalize)
        except (orjson.JSONDecodeError, RecursionError):  # compared as text, by its bytes
            pass
    if scan:  # as the cassette stores it: text with the secrets in it replaced
        text = text_of(raw, content_type)
        if text is not None:
            raw = secrets.replace(text)[0].encode()
    return _digest(raw)


def canonical_json(value: Any, ignore: IgnorePaths = (), secrets: Secrets = BUILT_IN, *,
                   normalize: Normalizer | None = None) -> Any:
    """The comparable form of a body already parsed from JSON (a stored request, a WebSocket
    message). It is written out once to be looked through for floats and secrets: one scan
    instead of a walk where there is neither."""
    try:
        raw = orjson.dumps(value)
    except (orjson.JSONEncodeError, RecursionError):  # nested deeper than orjson writes
        return _digest(repr(value).encode())
    try:
        return _json_body(value, ignore, _FLOAT_HINT.search(raw) is not None, secrets,
                          secrets.might_hold(raw), normalize)
    except RecursionError:
        return _digest(raw)


def canonical_query(query: str, secrets: Secrets = BUILT_IN,
                    normalize: Normalizer | None = None) -> tuple[tuple[str, str], ...]:
    pairs = _compared_pairs(parse_qsl(query, keep_blank_values=True), secrets)
    if normalize is not None:
        pairs = [(k, normalize.text(v)) for k, v in pairs]
    return tuple(sorted(pairs))


def canonical_path(path: str, secrets: Secrets = BUILT_IN) -> str:
    """A URL path as compared: a known secret or a key in it (a bot token) replaced."""
    path = path or "/"
    return secrets.replace(path)[0] if secrets.might_hold(path) else path


def comparable_host(scheme: str, host: str, port: int | None) -> str:
    host = host.lower().rstrip(".")
    if port is None or DEFAULT_PORTS.get(scheme.lower()) == port:
        return host
    return f"{host}:{port}"


def canonicalize(
    method: str,
    url: str,
    content_type: str | None,
    raw_body: bytes | None,
    ignore: IgnorePaths = (),
    secrets: Secrets = BUILT_IN,
    normalize: Normalizer | None = None,
) -> CanonicalRequest:
    """Canonical form of a live request given by its URL (``secrets`` knowing its secret
    headers' values, when it had any: ``exchange.header_values``)."""
    parts = urlsplit(url)
    secrets = secrets.with_values(exchange.own_secrets((), parts.query, secrets))
    return canonicalize_parts(method, parts.scheme, parts.hostname or "", parts.port,
                              parts.path, parts.query, content_type, raw_body, ignore, secrets,
                              normalize)


def canonicalize_parts(
    method: str,
    scheme: str,
    host: str,
    port: int | None,
    path: str,
    query: str,
    content_type: str | None,
    raw_body: bytes | None,
    ignore: IgnorePaths = (),
    secrets: Secrets = BUILT_IN,
    normalize: Normalizer | None = None,
) -> CanonicalRequest:
    """Canonical form of a live request given by its parts (no URL to build and re-parse).
    ``secrets`` knows, besides the rules, what the request carries by name
    (``exchange.own_secrets``: its key, a secret query parameter's value), so a copy of it
    elsewhere in the request is replaced as the scrub replaces it in the file. The path and the
    body are each scanned once, the query's values each once decoded: a part with nothing to
    replace is used as it is."""
    return CanonicalRequest(
        method=method.upper(),
        host=comparable_host(scheme, host, port),
        path=canonical_path(path, secrets),
        query=canonical_query(query, secrets, normalize) if query else (),
        body=canonical_body(content_type, raw_body, ignore, secrets, normalize),
    )


def canonical_recorded(request: RecordedRequest, ignore: IgnorePaths = (),
                       secrets: Secrets = BUILT_IN, *,
                       normalize: Normalizer | None = None) -> CanonicalRequest:
    """Canonical form of a stored request: the same as the live request it was recorded from.
    Its headers are not compared (a scrubbed recording's ``"authorization": "<redacted>"``
    would send every file down the slow path if its text were scanned whole)."""
    parts = urlsplit(request.url)
    body = request.body
    if body is None:
        value = None
    elif body.kind == "json":
        value = canonical_json(body.value, ignore, secrets, normalize=normalize)
    elif body.kind == "multipart":
        value = canonical_multipart(body.value, secrets)
    else:
        value = canonical_body(request.content_type, body.to_bytes(), ignore, secrets,
                               normalize=normalize)
    return CanonicalRequest(
        method=request.method.upper(),
        host="" if request.any_host else comparable_host(
            parts.scheme, parts.hostname or "", parts.port),
        path=canonical_path(parts.path, secrets),
        query=canonical_query(parts.query, secrets, normalize) if parts.query else (),
        body=value,
    )


# ---------------------------------------------------------------------------------------------
# Nearest miss


