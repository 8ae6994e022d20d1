"""Request canonicalisation and matching: pure functions, request in, key out.

Two requests match when method, host, path (its percent-escapes decoded), query (without secret
and signing parameters) and body are the same, where a JSON body is compared as data (key order and
whitespace ignored) with secret fields (at any depth) and the user's ``cassette_ignore`` paths
removed. Known secret values and key shapes inside strings are replaced as ``redact.scrub``
replaces them in a cassette, so a recording matches the live request it was made from; an RE2
scan of each part (``Secrets.might_hold``) keeps that free for a request with no secret in it.
Then the strings of the JSON body and the query values pass through the ``cassette_normalize``
normaliser (``normalize.py``) when there is one; where it changed something, the form before it
is kept beside (``CanonicalRequest.exact``), so a recording of the very request can answer
first. The path is never normalised (only its escapes decoded): it is the endpoint, which names
the files and groups the recordings, and ids in it come from earlier recorded answers, which a
replay gives back as they were. Nothing here touches mitmproxy or the disk.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson

from proxy_addon.bodies import multipart
from proxy_addon.formats import exchange
from proxy_addon.matching.jsonpath import drop_path, map_leaves
from proxy_addon.matching.normalize import Normalizer
from proxy_addon.model import Body, RecordedRequest, starts_like_json, text_of
from proxy_addon.redaction import redact
from proxy_addon.redaction.secret_rules import BUILT_IN, Secrets


def _builtin_sha256() -> Callable[[bytes], Any]:
    """SHA-256 as CPython implements it (``_sha2``, what ``hashlib`` falls back to), else
    ``hashlib``'s: the same digest, without OpenSSL's set-up of each hash, which costs a
    replayed request ~8 µs inside the proxy (where mitmproxy's own work between requests
    leaves it out of the CPU's caches) against ~3.5 µs."""
    try:
        return importlib.import_module("_sha2").sha256
    except ImportError:
        return hashlib.sha256


_sha256 = _builtin_sha256()
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
    # The same request before the ``cassette_normalize`` normaliser, when that changed something
    # in it (None: the two are one, and so are their keys). Exact beats normalised: a recording
    # of this very request answers before one that matches only once both are normalised.
    exact: CanonicalRequest | None = field(default=None, compare=False, repr=False)

    def key(self) -> str:
        return self._key

    def original(self) -> CanonicalRequest:
        """The request before the normaliser."""
        return self if self.exact is None else self.exact

    def exact_key(self) -> str:
        """The key before the normaliser (``key()`` itself when there is none)."""
        return self.original().key()

    def exact_any_host_key(self) -> str:
        return self.original().any_host_key()

    @cached_property
    def _key(self) -> str:  # computed once per request, however often it is looked up
        try:
            payload = orjson.dumps(
                [self.method, self.host, self.path, self.query, self.body],
                option=orjson.OPT_SORT_KEYS,
            )
        except (orjson.JSONEncodeError, RecursionError):  # nested deeper than orjson writes
            payload = repr([self.method, self.host, self.path, self.query, self.body]).encode()
        return _sha256(payload).hexdigest()

    def without_host(self) -> CanonicalRequest:
        return replace(self, host="", exact=self.exact and self.exact.without_host())

    def any_host_key(self) -> str:
        """The key of this request as a host-agnostic recording (llama-stack's) is stored."""
        return self._any_host_key

    @cached_property
    def _any_host_key(self) -> str:
        return self.without_host().key() if self.host else self.key()

    def describe(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in self.query)
        return f"{self.method} {self.host}{self.path}" + (f"?{query}" if query else "")


@dataclass(frozen=True, slots=True)
class Rules:
    """What matching leaves out and replaces, the same for every request of a run: the
    ``cassette_ignore`` paths, the secret rules (``cassette_redact_*`` and the environment's
    keys), the ``cassette_normalize`` normaliser and the ``cassette_host_map`` hosts."""

    ignore: IgnorePaths = ()
    secrets: Secrets = BUILT_IN
    normalize: Normalizer | None = None
    # ``cassette_host_map``: (from, to) comparable hosts; a request to ``from`` is compared as
    # one to ``to`` (recordings made for one base URL answer another)
    host_map: tuple[tuple[str, str], ...] = ()


DEFAULT_RULES = Rules()


@dataclass(slots=True)
class Request:
    """A request as matching sees it, live (``body`` the bytes sent, decoded) or recorded
    (``body`` as the file stores it): built from its parts, so the live path builds and parses
    no URL."""

    method: str
    scheme: str
    host: str
    port: int | None
    path: str
    query: str = ""
    content_type: str | None = None
    body: bytes | Body | None = None
    # its secret headers (name, value): the key it carries, learnt for the rest of it
    secret_headers: Sequence[tuple[str, str]] = ()
    any_host: bool = False  # matched on any host (llama-stack's recordings)

    @classmethod
    def from_url(
        cls,
        method: str,
        url: str,
        content_type: str | None = None,
        body: bytes | Body | None = None,
        secret_headers: Sequence[tuple[str, str]] = (),
    ) -> Request:
        parts = urlsplit(url)
        return cls(
            method,
            parts.scheme,
            parts.hostname or "",
            parts.port,
            parts.path,
            parts.query,
            content_type,
            body,
            secret_headers,
        )

    @classmethod
    def recorded(cls, request: RecordedRequest) -> Request:
        """A stored request. Its headers are not compared (a scrubbed recording's
        ``"authorization": "<redacted>"`` teaches nothing)."""
        parts = urlsplit(request.url)
        return cls(
            request.method,
            parts.scheme,
            parts.hostname or "",
            parts.port,
            parts.path,
            parts.query,
            request.content_type,
            request.body,
            any_host=request.any_host,
        )


# ---------------------------------------------------------------------------------------------
# Bodies


# A body may hold a float only where a digit is followed by "." or an exponent.
_FLOAT_HINT = re.compile(rb"\d[.eE]")
_EXACT_INT = 2**63  # orjson writes integers up to 64 bits


def _integral_as_int(value: Any, _key: str | None = None) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < _EXACT_INT:
        return int(value)
    return value


def integral_floats_as_ints(value: Any) -> Any:
    """``value`` with every float that is a whole number written as an int (JSON has one number
    type: a client in another language may send ``1`` or ``1.0``); unchanged parts shared."""
    return map_leaves(value, _integral_as_int)


def _json_body(
    value: Any, rules: Rules, floats: bool, secrets: Secrets, scan: bool, named: list[str]
) -> tuple[Any, Any]:
    """A JSON body's comparable form before the normaliser, and after it (the same object when
    there is none or it changed nothing). The strings its secret fields held go to ``named``."""
    if floats:
        value = integral_floats_as_ints(value)
    if scan or secrets.paths:  # a secret field, value or shape may be in it
        value = redact.json_for_matching(value, secrets, named)
    for path in rules.ignore:
        value = drop_path(value, path)
    return value, value if rules.normalize is None else rules.normalize.value(value)


def _compared_pairs(
    pairs: list[tuple[str, str]], secrets: Secrets, named: list[str]
) -> list[tuple[str, str]]:
    values = redact.pair_values_for_matching(pairs, secrets, named)
    return [(k, v) for (k, _), v in zip(pairs, values) if v is not None]


def _multipart(parts: list[dict[str, Any]], secrets: Secrets, named: list[str]) -> dict[str, Any]:
    fields = [(str(p.get("name")), p["value"]) for p in parts if isinstance(p.get("value"), str)]
    values = iter(redact.pair_values_for_matching(fields, secrets, named))
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
    return content_type is not None and "application/x-www-form-urlencoded" in content_type.lower()


def _digest(raw: bytes) -> dict[str, str]:
    return {"$sha256": _sha256(raw).hexdigest()}


def _same(value: Any) -> tuple[Any, Any]:
    """A comparable form the normaliser does not apply to (forms, uploads, bytes)."""
    return value, value


def _raw_body(
    content_type: str | None, raw: bytes, rules: Rules, secrets: Secrets, named: list[str]
) -> tuple[Any, Any]:
    """The comparable form of a body given as bytes (a live request), before and after the
    normaliser: one scan of the bytes says whether a key, known value or shape needs the walk."""
    if content_type and content_type.lower().startswith("multipart/form-data"):
        parts = multipart.fields(content_type, raw)
        if parts is not None:
            return _same(_multipart(parts, secrets, named))
    if _is_form(content_type):
        pairs = parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
        return _same({"$form": sorted(_compared_pairs(pairs, secrets, named))})
    scan = secrets.might_hold(raw)
    if starts_like_json(raw):
        try:
            return _json_body(
                orjson.loads(raw), rules, _FLOAT_HINT.search(raw) is not None, secrets, scan, named
            )
        except (orjson.JSONDecodeError, RecursionError):  # compared as text, by its bytes
            pass
    if scan:  # as the cassette stores it: text with the secrets in it replaced
        text = text_of(raw, content_type)
        if text is not None:
            raw = secrets.replace(text)[0].encode()
    return _same(_digest(raw))


def _parsed_json(value: Any, rules: Rules, secrets: Secrets, named: list[str]) -> tuple[Any, Any]:
    """The comparable form of a body already parsed from JSON (a stored request, a WebSocket
    message), before and after the normaliser. It is written out once to be looked through for
    floats and secrets: one scan instead of a walk where there is neither."""
    try:
        raw = orjson.dumps(value)
    except (orjson.JSONEncodeError, RecursionError):  # nested deeper than orjson writes
        return _same(_digest(repr(value).encode()))
    try:
        return _json_body(
            value,
            rules,
            _FLOAT_HINT.search(raw) is not None,
            secrets,
            secrets.might_hold(raw),
            named,
        )
    except RecursionError:
        return _same(_digest(raw))


def comparable_body(
    body: bytes | Body | None,
    content_type: str | None,
    rules: Rules,
    secrets: Secrets | None = None,
) -> Any:
    """The comparable form of a body, whether it came as bytes (a live request) or as a
    recording stores it (parsed JSON, multipart fields, text or bytes); a WebSocket client's
    message is compared by the same function. ``secrets``: the rules knowing the request's own
    key (``rules.secrets`` when not given)."""
    return _comparable(body, content_type, rules, [], secrets)[1]


def _comparable(
    body: bytes | Body | None,
    content_type: str | None,
    rules: Rules,
    named: list[str],
    secrets: Secrets | None = None,
) -> tuple[Any, Any]:
    """The comparable form of a body before and after the normaliser, which applies to JSON
    data only (forms, uploads and other bodies are compared as they are); the strings its
    secret fields held are appended to ``named``."""
    secrets = rules.secrets if secrets is None else secrets
    if body is None:
        return _same(None)
    if isinstance(body, Body):
        if body.kind == "json":
            return _parsed_json(body.value, rules, secrets, named)
        if body.kind == "multipart":
            return _same(_multipart(body.value, secrets, named))
        body = body.to_bytes()
    return _raw_body(content_type, body, rules, secrets, named) if body else _same(None)


# A SigV4 pre-signed URL's query parameters (``X-Amz-Date``, ``-Expires``, ``-Signature``, ...),
# new on every signing: never compared (only the secret ones are redacted, by their names).
SIGNING_PARAM_PREFIX = "x-amz-"


def _query(query: str, secrets: Secrets) -> tuple[tuple[str, str], ...]:
    if not query:
        return ()
    pairs = parse_qsl(query, keep_blank_values=True)
    pairs = [(k, v) for k, v in pairs if not k.lower().startswith(SIGNING_PARAM_PREFIX)]
    return tuple(sorted(_compared_pairs(pairs, secrets, [])))


def _normalised_query(
    query: tuple[tuple[str, str], ...], normalize: Normalizer
) -> tuple[tuple[str, str], ...]:
    """Each value normalised, seen with its parameter's name; ``query`` itself when nothing
    changed."""
    values = [normalize.text(v, k) for k, v in query]
    if all(new is old for new, (_, old) in zip(values, query)):
        return query
    return tuple(sorted(zip((k for k, _ in query), values)))


_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")  # a ``%`` that starts no escape: ``a%zz``


def _segment(segment: str) -> str:
    """A path segment with its escapes decoded, but for those of ``%`` and ``/`` (kept as ``%25``
    and ``%2F``) and a stray ``%`` (``%%``: a server reads ``a%zz`` apart from ``a%25zz``), so no
    two segments decode alike; as it is (strays as ``%%``) when the escapes are not UTF-8."""
    parts = _STRAY_PERCENT.split(segment)
    try:
        decoded = [unquote(part, errors="strict") for part in parts]
    except UnicodeDecodeError:
        return "%%".join(parts)
    return "%%".join(part.replace("%", "%25").replace("/", "%2F") for part in decoded)


def _path(path: str, secrets: Secrets) -> str:
    """A URL path as compared: percent-escapes decoded (a Bedrock model id is
    ``anthropic.claude-3-haiku-20240307-v1%3A0`` from boto3 and ``...-v1:0`` from the anthropic
    SDK: one path), and a known secret or a key in it (a bot token) replaced."""
    path = path or "/"
    if "%" in path:
        path = "/".join(_segment(s) for s in path.split("/"))
    return secrets.replace(path)[0] if secrets.might_hold(path) else path


def comparable_host(scheme: str, host: str, port: int | None) -> str:
    host = host.lower().rstrip(".")
    if port is None or DEFAULT_PORTS.get(scheme.lower()) == port:
        return host
    return f"{host}:{port}"


def parse_host_map(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``FROM=TO`` items as (from, to) comparable hosts (``ValueError`` naming a bad one):
    ``host[:port]`` each, lower-cased, a default port (80, 443) left out as a compared host
    leaves it out."""
    pairs = []
    for item in items:
        sides = item.split("=")
        mapped_from, mapped_to = (
            (_host_of(sides[0].strip()), _host_of(sides[1].strip()))
            if len(sides) == 2
            else (None, None)
        )
        if mapped_from is None or mapped_to is None:
            raise ValueError(
                f"{item!r} is not FROM=TO with each a host[:port], such as "
                "localhost:8000=127.0.0.1:8000"
            )
        pairs.append((mapped_from, mapped_to))
    return tuple(pairs)


def _host_of(text: str) -> str | None:
    if not text or any(c in text for c in "/@?#") or " " in text:
        return None
    try:
        parts = urlsplit(f"//{text}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return comparable_host("https" if port == 443 else "http", parts.hostname, port)


@functools.lru_cache(maxsize=256)
def _knowing_own(secrets: Secrets, headers: tuple[tuple[str, str], ...], query: str) -> Secrets:
    """``secrets`` also knowing what a request carries by name (``exchange.own_secrets``):
    remembered, as a run's requests carry the same key again and again."""
    own = exchange.own_secrets(headers, query, secrets)
    return secrets.with_values(own) if own else secrets


def canonicalize(request: Request, rules: Rules = DEFAULT_RULES) -> CanonicalRequest:
    """The comparable form of a request, live or recorded: the one place a request key is
    made (see ``canonicalize_with_secrets``)."""
    return canonicalize_with_secrets(request, rules)[0]


def canonicalize_with_secrets(
    request: Request, rules: Rules = DEFAULT_RULES
) -> tuple[CanonicalRequest, Secrets]:
    """The comparable form of a request, and the secret rules knowing what it carries by name
    (``exchange.own_secrets``: the key in its secret headers, a secret query parameter's value),
    so a copy of it elsewhere in the request is replaced as the scrub replaces it in the file.
    The body's secret fields are known for the path and the query too (the scrub learns them
    before it rewrites the URL); a recording's ``<redacted>`` is no secret to learn. Path and body
    are scanned once each, query values once decoded: a part with nothing to replace is kept."""
    secrets = _knowing_own(rules.secrets, tuple(request.secret_headers), request.query)
    named: list[str] = []
    body, normal_body = _comparable(request.body, request.content_type, rules, named, secrets)
    if named:
        secrets = secrets.with_values(named)
    method = request.method.upper()
    host = "" if request.any_host else comparable_host(request.scheme, request.host, request.port)
    for mapped_from, mapped_to in rules.host_map:
        if host == mapped_from:
            host = mapped_to
            break
    path = _path(request.path, secrets)
    query = _query(request.query, secrets)
    normalize = rules.normalize
    normal_query = _normalised_query(query, normalize) if normalize and query else query
    if normal_query is query and normal_body is body:  # nothing volatile: one request, one key
        return CanonicalRequest(method, host, path, query, body), secrets
    exact = CanonicalRequest(method, host, path, query, body)
    return CanonicalRequest(method, host, path, normal_query, normal_body, exact), secrets
