"""Short ways for unit tests to make a request key with the one production function,
``canonical.canonicalize``: from a URL and body bytes, from a stored request, from a JSON body."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from proxy_addon.matching.canonical import (
    CanonicalRequest,
    IgnorePaths,
    Request,
    Rules,
    canonicalize,
    comparable_body,
)
from proxy_addon.matching.normalize import Normalizer
from proxy_addon.model import Body, RecordedRequest
from proxy_addon.redaction.secret_rules import BUILT_IN, Secrets


def key_of(
    method: str,
    url: str,
    content_type: str | None = None,
    raw: bytes | None = None,
    ignore: IgnorePaths = (),
    secrets: Secrets = BUILT_IN,
    normalize: Normalizer | None = None,
    secret_headers: Sequence[tuple[str, str]] = (),
) -> CanonicalRequest:
    """A live request's key, given by its URL and body bytes."""
    return canonicalize(
        Request.from_url(method, url, content_type, raw, secret_headers),
        Rules(tuple(ignore), secrets, normalize),
    )


def recorded_key(
    request: RecordedRequest, ignore: IgnorePaths = (), secrets: Secrets = BUILT_IN
) -> CanonicalRequest:
    """A stored request's key."""
    return canonicalize(Request.recorded(request), Rules(tuple(ignore), secrets))


def json_key(value: Any) -> Any:
    """The comparable form of a JSON body as a recording stores it."""
    return comparable_body(Body("json", value), "application/json", Rules())
