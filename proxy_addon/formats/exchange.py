"""What a recording keeps of a live exchange, before ``redact.scrub`` cleans it as a whole:
the request headers that change the answer (and the secret ones, so their values are known to
the scrub), the response headers without the transport ones, and the secret strings a request's
headers carry."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl

from proxy_addon.model import Body, RecordedRequest
from proxy_addon.redaction.secret_rules import Secrets, credential_values, param_values

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


def recorded_request(
    method: str, url: str, headers: Iterable[tuple[str, str]], raw_body: bytes, secrets: Secrets
) -> RecordedRequest:
    """A live request as a recording keeps it until it is written: the headers that change the
    answer and the secret ones (``scrub`` replaces those, and finds their values elsewhere)."""
    items = list(headers)
    kept = {
        k.lower(): v
        for k, v in items
        if k.lower() in KEPT_REQUEST_HEADERS or secrets.is_secret_header(k)
    }
    body = Body.from_bytes(raw_body, kept.get("content-type"))
    return RecordedRequest(method=method, url=url, headers=dict(sorted(kept.items())), body=body)


def response_headers(headers: Iterable[tuple[str, str]]) -> list[list[str]]:
    """Response headers as ``[name, value]`` pairs in their order (names may repeat), without
    the transport ones."""
    return [[k.lower(), v] for k, v in headers if k.lower() not in TRANSPORT_RESPONSE_HEADERS]


def header_values(headers: Iterable[tuple[str, str]], secrets: Secrets) -> list[str]:
    """The secret strings a live request's secret headers carry (its key, its token): known
    secrets for matching and for the scrub, though the cassette keeps no such header value."""
    return [
        v
        for name, value in headers
        if secrets.is_secret_header(name)
        for v in credential_values(value, name)
    ]


def own_secrets(headers: Iterable[tuple[str, str]], query: str, secrets: Secrets) -> list[str]:
    """The secret strings a live request carries by name: its secret headers' credentials and
    its secret query parameters' values (Azure's ``?api-key=``). Known for the rest of the
    exchange: in matching, in the scrub, in a WebSocket replay's messages."""
    values = header_values(headers, secrets)
    return (
        values + param_values(parse_qsl(query, keep_blank_values=True), secrets)
        if query
        else values
    )


def signed(headers: Mapping[str, str]) -> bool:
    """Whether a request is signed over its headers (AWS SigV4: ``AnthropicBedrock`` signs
    every header, ``Accept-Encoding`` included), so none of them may change on its way."""
    return headers.get("authorization", "").upper().startswith("AWS4-")
