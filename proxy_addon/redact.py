"""What counts as a secret, and how a request is stripped of secrets before it is written.

The single source of truth for secret header names, query parameters and body fields: the
recorder, the matcher (which ignores them) and ``cassette verify`` all read these sets.
"""

from __future__ import annotations

from typing import Any, Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from proxy_addon.model import Body, RecordedRequest

REDACTED = "<redacted>"

SECRET_HEADERS: frozenset[str] = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "api-key",
        "x-api-key",
        "x-goog-api-key",
        "cookie",
        "set-cookie",
    }
)

SECRET_QUERY_PARAMS: frozenset[str] = frozenset(
    {"key", "api_key", "api-key", "apikey", "access_token", "token", "sig", "signature"}
)

# Top-level fields of a JSON or form body that carry a key (Tavily puts ``api_key`` in its body).
SECRET_BODY_FIELDS: frozenset[str] = frozenset({"api_key", "apikey", "api-key", "access_token"})

# Request headers worth keeping in a cassette: they change what the provider answers. Everything
# else (user agents, x-stainless-* telemetry, content-length) is noise in a review.
KEPT_REQUEST_HEADERS: frozenset[str] = frozenset(
    {
        "content-type",
        "accept",
        "anthropic-version",
        "anthropic-beta",
        "openai-beta",
        "openai-organization",
        "openai-project",
    }
)

# Response headers that describe the bytes on the wire, not the content: the body is stored
# decoded, so these would be wrong on replay.
TRANSPORT_RESPONSE_HEADERS: frozenset[str] = frozenset(
    {
        "content-length",
        "content-encoding",
        "transfer-encoding",
        "connection",
        "keep-alive",
    }
)


def request_headers_for_cassette(
    headers: Iterable[tuple[str, str]], extra_secret: Iterable[str] = ()
) -> dict[str, str]:
    """The request headers a cassette keeps: the meaningful ones, and secrets as a marker."""
    extra = {e.lower() for e in extra_secret}
    out: dict[str, str] = {}
    for name, value in headers:
        lowered = name.lower()
        if lowered in SECRET_HEADERS or lowered in extra:
            out[lowered] = REDACTED
        elif lowered in KEPT_REQUEST_HEADERS:
            out[lowered] = value
    return dict(sorted(out.items()))


def response_headers_for_cassette(
    headers: Iterable[tuple[str, str]], extra_secret: Iterable[str] = ()
) -> list[list[str]]:
    """Response headers as ``[name, value]`` pairs in their order (names may repeat)."""
    extra = {e.lower() for e in extra_secret}
    out: list[list[str]] = []
    for name, value in headers:
        lowered = name.lower()
        if lowered in TRANSPORT_RESPONSE_HEADERS:
            continue
        if lowered in SECRET_HEADERS or lowered in extra:
            out.append([lowered, REDACTED])
        else:
            out.append([lowered, value])
    return out


def is_secret_param(name: str) -> bool:
    return name.lower() in SECRET_QUERY_PARAMS


def is_secret_form_field(name: str) -> bool:
    """A urlencoded or multipart field that carries a key (query-style or body-style name)."""
    return is_secret_param(name) or name.lower() in SECRET_BODY_FIELDS


def redact_query_pairs(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, REDACTED if is_secret_param(k) else v) for k, v in pairs]


def redact_url(url: str) -> str:
    """The URL with secret query values replaced and any user:password removed."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(is_secret_param(k) for k, _ in pairs):
            query = urlencode(redact_query_pairs(pairs), safe="<>")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_body(body: Any) -> Any:
    """A copy of a parsed JSON / form body with secret top-level fields replaced."""
    if isinstance(body, dict) and any(k.lower() in SECRET_BODY_FIELDS for k in body):
        return {k: (REDACTED if k.lower() in SECRET_BODY_FIELDS else v) for k, v in body.items()}
    return body


def redact_form(text: str) -> str:
    """A urlencoded form body with secret fields replaced."""
    pairs = parse_qsl(text, keep_blank_values=True)
    if not any(is_secret_form_field(k) for k, _ in pairs):
        return text
    return urlencode([(k, REDACTED if is_secret_form_field(k) else v) for k, v in pairs],
                     safe="<>")


def redact_multipart(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Multipart fields with secret values replaced (files are stored as hashes anyway)."""
    return [dict(p, value=REDACTED) if "value" in p and is_secret_form_field(str(p.get("name")))
            else p for p in parts]


def recorded_request(method: str, url: str, headers: Iterable[tuple[str, str]], raw_body: bytes,
                     extra_secret: Iterable[str] = ()) -> RecordedRequest:
    """A live request as it is written to a cassette: the headers that change the answer,
    secrets replaced by a marker in the URL, headers and body (the live request is untouched)."""
    items = list(headers)
    kept = request_headers_for_cassette(items, extra_secret)
    content_type = next((v for k, v in items if k.lower() == "content-type"), None)
    body = Body.from_bytes(raw_body, content_type)
    if body is not None and body.kind == "json":
        body = Body("json", redact_body(body.value))
    elif body is not None and body.kind == "text" and content_type and \
            "x-www-form-urlencoded" in content_type:
        body = Body("text", redact_form(body.value))
    elif body is not None and body.kind == "multipart":
        body = Body("multipart", redact_multipart(body.value))
    return RecordedRequest(method=method, url=redact_url(url), headers=kept, body=body)
