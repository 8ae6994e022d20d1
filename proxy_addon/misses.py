"""What the client and the log are told when a request has no recording (or fails inside the
proxy): the wording, and the provider-style error body. Never fails, whatever the request."""

from __future__ import annotations

from typing import Any

import orjson

from proxy_addon.matching import CanonicalRequest
from proxy_addon.store.index import Index

QUOTE_LIMIT = 300  # characters of a request body or URL quoted in a message


def clip(text: str, limit: int = QUOTE_LIMIT) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def quote(value: Any) -> str:
    """A JSON value as compact text for a message, at most ``QUOTE_LIMIT`` characters; a value
    orjson cannot write (nested deeper than it goes) is described instead."""
    try:
        return clip(orjson.dumps(value).decode())
    except (TypeError, RecursionError):
        return f"<a {type(value).__name__} nested too deep to show>"


def miss_message(canon: CanonicalRequest, index: Index) -> str:
    """What a user needs to fix a miss: what was asked, what was nearest and where it differs."""
    model = canon.body.get("model") if isinstance(canon.body, dict) else None
    msg = (f"cassette miss: no recording in {index.root}/ matches {clip(canon.describe())}"
           + (f" (model {clip(model, 80)})" if isinstance(model, str) else "") + ".")
    if canon.body is not None:
        msg += f" Request body: {quote(canon.body)}."
    try:
        near = index.nearest(canon)
    except RecursionError:  # comparing a body deeper than Python compares
        near = None
    if near is not None:
        entry, diffs = near
        where = ", ".join(diffs[:8]) + (" ..." if len(diffs) > 8 else "") if diffs else "nothing"
        msg += f" Nearest recording: {entry.path}, which differs at: {clip(where)}."
    else:
        msg += " No recording exists for this endpoint."
    bad = index.bad_files_for(canon)
    if bad:
        msg += " Unreadable files that may have matched: " + "; ".join(
            f"{b.path} ({b.reason})" for b in bad[:3]) + "."
    return msg + " Record it with --set cassette_mode=auto (or record)."


def error_body(message: str, kind: str, code: str) -> bytes:
    """An error in the shape OpenAI-style SDKs parse and show (``error.message``)."""
    return orjson.dumps({"error": {"message": message, "type": kind, "param": None,
                                   "code": code}})
