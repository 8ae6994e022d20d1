"""Secrets no single event holds: the ones a stream spells across its events.

A stream's answer comes in deltas (``bodies/pieces.py``), so a key the model repeats, or a tool
call's ``{"api_key": ...}``, may be cut into pieces a few characters long, one per event: no
event holds it, the text they join to does. ``across`` joins each answer's pieces, finds what
``secret_rules`` would replace in the joined text (and, when that text is JSON, the strings
under secret names: ``embedded``), and replaces it in every piece that carries a part of it:
the first piece of a secret gets ``<redacted>``, the others lose their part of it. Events keep
their number, their types and their other fields, so a replay stays well-formed for the SDKs.

A long answer is read a window at a time (``_WINDOW`` characters, the last ``_OVERLAP`` of each
read again with the next), so memory stays bounded by the window, not by the answer; pieces are
remembered by where they are, and read again from their event only where a secret is cut out.
"""

from __future__ import annotations

import dataclasses
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from proxy_addon.bodies.pieces import pieces
from proxy_addon.bodies.sse import Event, Unparsed, parse_data
from proxy_addon.model import Body, WebSocketMessage
from proxy_addon.redaction.embedded import embedded_secrets, token_spans
from proxy_addon.redaction.secret_rules import REDACTED, Secrets

_WINDOW = 1 << 20  # characters of an answer scanned at once
_OVERLAP = 1 << 16  # read again with the next window: no key is longer
_JSON_WHOLE = 8 << 20  # JSON spelled across events is read whole for names up to this length

Path = tuple[str | int, ...]
Span = tuple[int, int, str, str]  # start, end, layer, what
# (JSON path of its first piece, first and last event or message, layer, what)
Hit = tuple[Path, int, int, str, str]
MESSAGE_FIELDS = {"json": "data", "text": "text"}  # a WebSocket message's payload, in the file


def find(text: str, secrets: Secrets, names: bool = True) -> list[Span]:
    """Where ``text`` holds a secret, in order, overlaps merged: known values and shapes
    (``Secrets.spans``), and with ``names``, when it is JSON, the strings under secret names."""
    named = {v: k for k, v in embedded_secrets(text, secrets)} if names else {}
    found = [(s, e, "name", f"field {named[v]}") for s, e, v in token_spans(text, list(named))]
    known = secrets.with_values(named)
    if known.might_hold(text):
        found += known.spans(text)
    return _merged(found)


def _merged(spans: list[Span]) -> list[Span]:
    out: list[Span] = []
    for start, end, layer, what in sorted(spans):
        if out and start < out[-1][1]:
            last = out[-1]
            out[-1] = (last[0], max(last[1], end), last[2], last[3])
        else:
            out.append((start, end, layer, what))
    return out


@dataclass(slots=True)
class _Channel:
    """One answer's pieces as they come: where each is (its payload, its path there, its start
    in the joined text; compact, a long stream has many), the text not yet scanned, and the
    secrets found so far."""

    payloads: array[int] = field(default_factory=lambda: array("q"))
    paths: list[Path] = field(default_factory=list)
    starts: array[int] = field(default_factory=lambda: array("q"))
    window: list[str] = field(default_factory=list)
    window_at: int = 0  # where the window starts in the joined text
    window_size: int = 0
    size: int = 0
    json: bool | None = None  # JSON, read whole for names (None: not known yet)
    spans: list[Span] = field(default_factory=list)

    def add(self, i: int, path: Path, text: str, secrets: Secrets) -> None:
        self.payloads.append(i)
        self.paths.append(path)
        self.starts.append(self.size)
        self.window.append(text)
        self.size += len(text)
        self.window_size += len(text)
        if self.json is None and text.strip():
            self.json = text.lstrip()[:1] in ("{", "[")
        whole = self.json and self.window_size < _JSON_WHOLE
        if self.window_size >= _WINDOW and not whole:
            self.scan(secrets, last=False)

    def scan(self, secrets: Secrets, last: bool) -> None:
        """Scan the window; keep the spans that start before its overlap (all, at the end),
        and carry the overlap on as the next window."""
        text = "".join(self.window)
        read_whole = self.json is True and self.window_at == 0 and last
        if not last:
            self.json = False  # the text is read in windows: names only whole
        keep = len(text) if last else len(text) - _OVERLAP
        at = self.window_at
        found = find(text, secrets, read_whole)
        self.spans += [(s + at, e + at, layer, what) for s, e, layer, what in found if s < keep]
        self.window, self.window_at, self.window_size = [text[keep:]], at + keep, len(text) - keep


def _cut(text: str, at: int, spans: list[Span]) -> str:
    """A piece that starts at ``at`` in the joined text, with its part of every span removed
    and ``REDACTED`` where a span starts."""
    end, out, pos = at + len(text), [], at
    for start, stop, _, _ in spans:
        if stop <= at or start >= end:
            continue
        out.append(text[pos - at : max(start, at) - at])
        if start >= at:
            out.append(REDACTED)
        pos = min(stop, end)
    out.append(text[pos - at :])
    return "".join(out)


def _at(value: Any, path: Path) -> Any:
    for key in path:
        value = value[key]
    return value


def _with(value: Any, path: Path, new: str) -> Any:
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


def across(payloads: Sequence[Any], secrets: Secrets) -> tuple[dict[int, Any], list[Hit]]:
    """The payloads (of a stream's events, or a conversation's server messages) whose pieces
    carry a secret spelled across several of them, by position, rewritten; and each secret
    found (its first piece's path in its payload, the first and last payload). Payloads are
    parsed JSON, strings, or ``Unparsed`` text."""
    channels: dict[tuple[Any, ...], _Channel] = {}
    paths: dict[Path, Path] = {}  # one tuple per distinct path
    for i, payload in enumerate(payloads):
        data = parse_data(payload) if isinstance(payload, Unparsed) else payload
        for channel, path, text in pieces(data):
            if text:
                spelt = channels.get(channel) or channels.setdefault(channel, _Channel())
                spelt.add(i, paths.setdefault(path, path), text, secrets)
    changed: dict[int, Any] = {}
    hits: list[Hit] = []
    for spelt in channels.values():
        if len(spelt.paths) < 2:  # one string: scanned as it is
            continue
        spelt.scan(secrets, last=True)
        spans = _merged(spelt.spans)
        if not spans:
            continue
        starts, events = spelt.starts, spelt.payloads
        for start, stop, layer, what in spans:
            first, last = bisect_right(starts, start) - 1, bisect_left(starts, stop) - 1
            hits.append((spelt.paths[first], events[first], events[last], layer, what))
        ends = [*starts[1:], spelt.size]
        for i, path, at, end in zip(events, spelt.paths, starts, ends):
            if any(start < end and stop > at for start, stop, _, _ in spans):
                base = changed.get(i, payloads[i])
                base = parse_data(base) if isinstance(base, Unparsed) else base
                changed[i] = _with(base, path, _cut(_at(base, path), at, spans))
    return changed, hits
