"""Secrets no single string holds: the ones a stream spells across its events, and the ones
inside JSON that is itself a string.

A stream's answer comes in deltas (``bodies/pieces.py``), so a key the model repeats, or a tool
call's ``{"api_key": ...}``, may be cut into pieces a few characters long, one per event: no
event holds it, the text they join to does. ``across`` joins each answer's pieces, finds what
``secret_rules`` would replace in the joined text (and, when that text is JSON, the strings
under secret names), and replaces it in every piece that carries a part of it: the first piece
of a secret gets ``<redacted>``, the others lose their part of it. Events keep their number,
their types and their other fields, so a replay stays well-formed for the SDKs.

A string that holds JSON (a tool call's ``arguments``, a tool's result, a WebSocket message's
text field) hides its names from a walk of the document it sits in; ``embedded_secrets`` finds
the strings under secret names in it, and ``replace_tokens`` rewrites the string with those
JSON strings replaced, keeping its spacing and order.
"""

from __future__ import annotations

import dataclasses
import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from itertools import accumulate
from typing import Any

import orjson

from proxy_addon.bodies.pieces import pieces
from proxy_addon.bodies.sse import Event, Unparsed, parse_data
from proxy_addon.model import Body, WebSocketMessage
from proxy_addon.redaction.secret_rules import REDACTED, Secrets

_STRING_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"(\s*:)?', re.DOTALL)

# (JSON path of its first piece, first and last event or message, layer, what)
Hit = tuple[tuple[str | int, ...], int, int, str, str]
MESSAGE_FIELDS = {"json": "data", "text": "text"}  # a WebSocket message's payload, in the file


def embedded_secrets(text: str, secrets: Secrets) -> list[tuple[str, str]]:
    """(name, string) for each string under a secret name in ``text`` when it is a JSON object
    or array (at any depth, and in JSON strings inside it): empty for any other text."""
    if text.lstrip()[:1] not in ("{", "[") or not secrets.might_hold(text):
        return []
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return []
    found: list[tuple[str, str]] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for k, v in item.items():
                if secrets.is_secret_field(k, v, None):
                    if v and v != REDACTED:
                        found.append((k, v))
                else:
                    stack.append(v)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and item.lstrip()[:1] in ("{", "["):
            found += embedded_secrets(item, secrets)
    return found


def _token_spans(text: str, values: Sequence[str]) -> list[tuple[int, int, str]]:
    """(start, end, value) where a JSON string (not a key) of ``text`` decodes to one of
    ``values``, inside its quotes."""
    wanted = set(values)
    out = []
    for m in _STRING_TOKEN.finditer(text):
        if m.group(1) is not None:  # a key
            continue
        try:
            decoded = orjson.loads(m.group(0))
        except orjson.JSONDecodeError:
            continue
        if decoded in wanted:
            out.append((m.start() + 1, m.end() - 1, decoded))
    return out


def replace_tokens(text: str, values: Sequence[str]) -> str:
    """``text`` (JSON) with every JSON string that is one of ``values`` replaced, in JSON
    strings inside it too (that string then written anew)."""
    wanted = set(values)

    def token(m: re.Match[str]) -> str:
        if m.group(1) is not None:  # a key
            return m.group(0)
        try:
            decoded = orjson.loads(m.group(0))
        except orjson.JSONDecodeError:
            return m.group(0)
        if decoded in wanted:
            return f'"{REDACTED}"'
        if isinstance(decoded, str) and decoded.lstrip()[:1] in ("{", "["):
            inner = replace_tokens(decoded, values)
            return orjson.dumps(inner).decode() if inner != decoded else m.group(0)
        return m.group(0)

    return _STRING_TOKEN.sub(token, text)


def find(text: str, secrets: Secrets) -> list[tuple[int, int, str, str]]:
    """Where ``text`` holds a secret, as ``Secrets.spans`` says (start, end, layer, what):
    known values, shapes, and, when it is JSON, the strings under secret names."""
    named = dict((v, k) for k, v in embedded_secrets(text, secrets))
    found = [(s, e, "name", f"field {named[v]}") for s, e, v in _token_spans(text, list(named))]
    known = secrets.with_values(named)
    if known.might_hold(text):
        found += known.spans(text)
    merged: list[tuple[int, int, str, str]] = []
    for start, end, layer, what in sorted(found):
        if merged and start < merged[-1][1]:
            last = merged[-1]
            merged[-1] = (last[0], max(last[1], end), last[2], last[3])
        else:
            merged.append((start, end, layer, what))
    return merged


def _cut(joined: str, starts: list[int], spans: list[tuple[int, int, str, str]]) -> list[str]:
    """Each piece of ``joined`` (piece k is ``joined[starts[k]:starts[k + 1]]``) with its part
    of every span removed, and ``REDACTED`` where a span starts."""
    out = []
    for at, end in zip(starts, starts[1:]):
        new, pos = [], at
        for start, stop, _, _ in spans:
            if stop <= at or start >= end:
                continue
            new.append(joined[pos : max(start, at)])
            if start >= at:
                new.append(REDACTED)
            pos = min(stop, end)
        new.append(joined[pos:end])
        out.append("".join(new))
    return out


def _with(value: Any, path: tuple[str | int, ...], new: str) -> Any:
    """``value`` with the string at ``path`` replaced; the parts on the way copied."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[head] = _with(value[head], rest, new)  # type: ignore[index]
    return copy


def in_events(events: list[Event], secrets: Secrets) -> tuple[list[Event], list[Hit]]:
    """A stream's events with the secrets their pieces spell together replaced (the same list
    when there are none), and each secret found (paths from the stream)."""
    changed, hits = across([ev.data for ev in events], secrets)
    if changed:
        events = [
            dataclasses.replace(ev, data=changed[i]) if i in changed else ev
            for i, ev in enumerate(events)
        ]
    return events, [
        (("events", f, "data", *path), f, last, layer, what) for path, f, last, layer, what in hits
    ]


def in_messages(
    messages: list[WebSocketMessage], secrets: Secrets
) -> tuple[list[WebSocketMessage], list[Hit]]:
    """The same for a WebSocket conversation's server messages (a client's messages are
    matched one by one, as the client sends them)."""
    spelling = [
        i for i, m in enumerate(messages) if m.side == "server" and m.payload.kind in MESSAGE_FIELDS
    ]
    changed, hits = across([messages[i].payload.value for i in spelling], secrets)
    if changed:
        messages = list(messages)
        for k, value in changed.items():
            payload = messages[spelling[k]].payload
            messages[spelling[k]] = dataclasses.replace(
                messages[spelling[k]], payload=Body(payload.kind, value)
            )
    return messages, [
        (
            ("messages", spelling[f], MESSAGE_FIELDS[messages[spelling[f]].payload.kind], *path),
            spelling[f],
            spelling[last],
            layer,
            what,
        )
        for path, f, last, layer, what in hits
    ]


def across(
    payloads: Sequence[Any], secrets: Secrets
) -> tuple[dict[int, Any], list[tuple[tuple[str | int, ...], int, int, str, str]]]:
    """The payloads (of a stream's events, or a conversation's server messages) whose pieces
    carry a secret spelled across several of them, by position, rewritten; and each secret
    found (its first piece's path in its payload, the first and last payload). Payloads are
    parsed JSON, strings, or ``Unparsed`` text."""
    # per channel: where each piece is (payload, path), and the pieces' text
    channels: dict[tuple[Any, ...], tuple[list[tuple[int, tuple[str | int, ...]]], list[str]]]
    channels = {}
    for i, payload in enumerate(payloads):
        data = parse_data(payload) if isinstance(payload, Unparsed) else payload
        for channel, path, text in pieces(data):
            if text:
                where, texts = channels.setdefault(channel, ([], []))
                where.append((i, path))
                texts.append(text)
    changed: dict[int, Any] = {}
    hits: list[tuple[tuple[str | int, ...], int, int, str, str]] = []
    for where, texts in channels.values():
        if len(texts) < 2:  # one string: scanned as it is
            continue
        starts = list(accumulate(map(len, texts), initial=0))
        joined = "".join(texts)
        texts.clear()  # a long answer is held once, joined
        spans = find(joined, secrets)
        if not spans:
            continue
        for start, stop, layer, what in spans:
            first, last = bisect_right(starts, start) - 1, bisect_left(starts, stop) - 1
            hits.append((where[first][1], where[first][0], where[last][0], layer, what))
        for k, ((i, path), new) in enumerate(zip(where, _cut(joined, starts, spans))):
            if new != joined[starts[k] : starts[k + 1]]:
                base = changed.get(i, payloads[i])
                base = parse_data(base) if isinstance(base, Unparsed) else base
                changed[i] = _with(base, path, new)
    return changed, hits
