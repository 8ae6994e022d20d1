"""What the client and the log are told when a request has no recording, hits a stale one, or
fails inside the proxy: the wording, and the provider-style error body. Never fails, whatever the
request."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson

from proxy_addon.matching import difference, normalize
from proxy_addon.matching.canonical import CanonicalRequest, Rules
from proxy_addon.matching.normalize import Normalizer
from proxy_addon.printable import printable
from proxy_addon.runner.interface import DEFAULT_INTERFACE, spell
from proxy_addon.store import age
from proxy_addon.store.entries import Entry
from proxy_addon.store.index import Index

# The request as matching would see it under other rules (another normaliser), computed again
# from the live request, only when a miss is explained.
Recanonicalize = Callable[[Rules], CanonicalRequest]

QUOTE_LIMIT = 300  # characters of a request body or URL quoted in a message

# The status of a miss: 424 Failed Dependency (what the request depends on, its recording, is
# missing). Measured with the SDKs and frameworks (research of 2026-12-03): none retries it,
# none has a class for it (a plain APIStatusError, ModelHTTPError, APIError), and each shows
# the message; a 404 reads as "model not found" in LangChain, pydantic-ai and CrewAI, and
# 409, 429 and 5xx are retried.
MISS_STATUS = 424
# Google's error status for each status we answer with (``error.status``).
_GOOGLE_STATUS = {424: "FAILED_PRECONDITION", 410: "FAILED_PRECONDITION", 500: "INTERNAL"}


def clip(text: str, limit: int = QUOTE_LIMIT) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def quote(value: Any) -> str:
    """A JSON value as compact text for a message, at most ``QUOTE_LIMIT`` characters; a value
    orjson cannot write (nested deeper than it goes) is described instead."""
    try:
        return clip(orjson.dumps(value).decode())
    except (TypeError, RecursionError):
        return f"<a {type(value).__name__} nested too deep to show>"


def nearest(canon: CanonicalRequest, index: Index) -> tuple[Entry, list[str]] | None:
    """The recording nearest a missed request and the paths where it differs, found once for
    the miss's message and its report; None when there is none, or when the body is deeper
    than Python compares."""
    try:
        return index.nearest(canon)
    except RecursionError:
        return None


def miss_message(
    canon: CanonicalRequest,
    index: Index,
    near: tuple[Entry, list[str]] | None,
    recanonicalize: Recanonicalize,
    interface: str = DEFAULT_INTERFACE,
) -> str:
    """What a user needs to fix a miss: what was asked, what was nearest (``near``, from
    ``nearest``) and where it differs, and the normaliser that would have made it match the
    nearest, if one would; options spelled as ``interface`` (``runner/interface.py``) takes
    them."""
    model = canon.body.get("model") if isinstance(canon.body, dict) else None
    msg = (
        f"cassette miss: no recording in {index.root}/ matches {clip(canon.describe())}"
        + (f" (model {clip(model, 80)})" if isinstance(model, str) else "")
        + "."
    )
    if canon.body is not None:
        msg += f" Request body: {quote(canon.body)}."
    fix = f"Record it with {spell(interface, 'cassette_mode', 'auto')} (or record)."
    if near is not None:
        entry, diffs = near
        where = ", ".join(diffs[:8]) + (" ..." if len(diffs) > 8 else "") if diffs else "nothing"
        msg += f" Nearest recording: {entry.path}, which differs at: {clip(where)}."
        hint = normaliser_hint(index, entry, recanonicalize, interface)
        if hint:
            msg += " " + hint
        if diffs == ["host"]:  # recorded for another base URL: nothing to record, map it
            fix = host_map_hint(canon.host, entry.origin, interface)
    else:
        msg += " No recording exists for this endpoint."
    bad = index.bad_files_for(canon)
    if bad:
        msg += (
            " Unreadable files that may have matched: "
            + "; ".join(f"{b.path} ({b.reason})" for b in bad[:3])
            + "."
        )
    return printable(f"{msg} {fix}")  # printed by the runners, shown by the SDKs


def host_map_hint(asked: str, recorded_for: str, interface: str = DEFAULT_INTERFACE) -> str:
    """What makes a recording made for another host (a base URL on another port or machine,
    ``localhost`` for ``127.0.0.1``) answer this one."""
    mapping = spell(interface, "cassette_host_map", f"{asked}={recorded_for}")
    return (
        f"It was recorded for {recorded_for}: to answer requests to {asked} with the "
        f"recordings made for {recorded_for}, add {mapping}."
    )


def normaliser_hint(
    index: Index, entry: Entry, recanonicalize: Recanonicalize, interface: str = DEFAULT_INTERFACE
) -> str | None:
    """The presets not configured that would make the request match ``entry``: each alone
    first, then all of them together."""
    current = index.rules.normalize or Normalizer()
    missing = [name for name in normalize.PRESETS if name not in current.presets]
    tries = [[name] for name in missing] + ([missing] if len(missing) > 1 else [])
    try:
        for names in tries:
            rules = replace(index.rules, normalize=current.with_presets(names))
            recorded = index.canonical(entry.request, rules)
            if not difference.request_diff(recanonicalize(rules), recorded):
                value = ",".join(names)
                return (
                    f"It matches with the normaliser {value!r} (volatile values such as "
                    f"today's date in the prompt): add "
                    f"{spell(interface, 'cassette_normalize', value)}."
                )
    except (RecursionError, OSError, ValueError):  # too deep to compare, or a file gone
        return None
    return None


def stale_message(
    path: Path, how_old: timedelta, limit: str, refused: bool, interface: str = DEFAULT_INTERFACE
) -> str:
    """A hit on a recording older than ``cassette_max_age``, answered or refused."""
    refresh = spell(interface, "cassette_mode", "refresh")
    return (
        f"cassette stale: {path} was recorded {age.describe(how_old)} ago, more than "
        f"cassette_max_age={limit}"
        + ("; refused (cassette_stale=fail)" if refused else "")
        + f". Re-record it with {refresh} {spell(interface, 'cassette_max_age', limit)}."
    )


def error_body(
    message: str, kind: str, code: str, status: int = 500, provider: str = "openai-compatible"
) -> bytes:
    """An error in the shape the provider's SDKs parse and show (``hosts.family`` names the
    provider): Anthropic's (``error.type``, ``error.message``), Google's (``error.code``,
    ``error.status``), else OpenAI's (``error.message``, which OpenAI-compatible clients print
    alone). Each was checked to show the message in its SDKs and the frameworks over them."""
    if provider == "anthropic":
        return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})
    if provider in ("gemini", "vertex"):
        google = _GOOGLE_STATUS.get(status, "UNKNOWN")
        return orjson.dumps({"error": {"code": status, "message": message, "status": google}})
    return orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})
