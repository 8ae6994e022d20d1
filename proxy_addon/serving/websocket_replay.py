"""WebSocket conversations (the Realtime API): what recording captures, and what a replay
answers to each client message. Pure: payloads in, payloads out; mitmproxy is in
``mitm/websocket.py`` and the loopback server that speaks the protocol in
``websocket_server.py``.

A replay is position by position: the server messages recorded before the first client message
are sent on connect; each client message must match the next client message of the recording,
and then the server messages that followed it are sent. Several recordings of one handshake are
all followed at once: each client message keeps only those whose messages so far match, and the
answers come from the first of them, so the conversation narrows as it goes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from proxy_addon.matching import canonical, difference, jsonpath
from proxy_addon.model import (
    Body,
    WebSocketClose,
    WebSocketConversation,
    WebSocketMessage,
)
from proxy_addon.redaction.secret_rules import Secrets
from proxy_addon.runner.interface import DEFAULT_INTERFACE, spell
from proxy_addon.serving.misses import clip, quote

# Ids a client makes up itself, left out when its messages are matched (with cassette_ignore):
# the event's own id, and the ids a client may give the conversation items it creates.
CLIENT_ID_PATHS = tuple(jsonpath.parse_path(p) for p in ("event_id", "item.id", "previous_item_id"))
# When a recording ends with the client's close, a replay waits this long (seconds) for the
# client to close, or to send more (a miss), before it sends the recorded close itself.
CLIENT_CLOSE_GRACE = 1.0
MISS_CLOSE_CODE = 1008  # policy violation: the client said something never recorded


def canonical_message(payload: Body, rules: canonical.Rules, secrets: Secrets) -> Any:
    """The comparable form of a client message: a request body's (``canonical.comparable_body``:
    ``cassette_ignore`` paths, the client's own ids and secrets left out, ``cassette_normalize``
    applied to JSON; text with its secrets replaced as the recording stores it, and bytes, by
    their SHA-256). ``secrets`` knows the handshake's own key."""
    return canonical.comparable_body(payload, None, rules, secrets)


@dataclass(slots=True)
class Miss:
    """A client message no recording has at this point."""

    message: str  # the log line (and the error event's message)
    path: str | None  # the first JSON path that differed, when there was a message to compare
    event_id: str | None  # the client's event_id, echoed in the error event


@dataclass(slots=True)
class Reply:
    """What to send after a client message (or on connect): the recorded server messages, and
    the close when the recording ends there. ``anchor`` is the recorded time of the message
    answered (0 on connect); a paced replay keeps the recorded gaps from it."""

    anchor: float = 0.0
    messages: list[WebSocketMessage] = field(default_factory=list)
    close: WebSocketClose | None = None
    miss: Miss | None = None

    def close_delay(self, pace: float) -> float:
        """Seconds after the anchor's arrival to send the close: the recorded gap, and when
        the client closed in the recording, a grace for it to do so again."""
        if self.close is None:
            return 0.0
        grace = CLIENT_CLOSE_GRACE if self.close.side == "client" else 0.0
        return max(0.0, self.close.t - self.anchor) * pace + grace


class _Script:
    """One recording being followed: the position of the next message to play."""

    def __init__(self, conversation: WebSocketConversation) -> None:
        self.conversation = conversation
        self.cursor = 0

    def next_client(self) -> WebSocketMessage | None:
        """The client message the recording expects next (None: none, or the server's turn)."""
        messages = self.conversation.messages
        if self.cursor < len(messages) and messages[self.cursor].side == "client":
            return messages[self.cursor]
        return None

    def server_run(self) -> list[WebSocketMessage]:
        """The server messages from here to the next client message; the cursor moves past."""
        messages = self.conversation.messages
        start = self.cursor
        while self.cursor < len(messages) and messages[self.cursor].side == "server":
            self.cursor += 1
        return messages[start : self.cursor]

    @property
    def ended(self) -> bool:
        return self.cursor >= len(self.conversation.messages)


_DEFAULT_CLOSE = WebSocketClose("client", 1000)  # a recording with no close written


class Replay:
    """One replayed connection: the recordings still consistent with what the client sent."""

    def __init__(
        self,
        recordings: list[WebSocketConversation],
        rules: canonical.Rules,
        where: str,
        secrets: Secrets | None = None,
        interface: str = DEFAULT_INTERFACE,
    ) -> None:
        assert recordings, "a replay needs at least one recording"
        self._alive = [_Script(r) for r in recordings]
        self._rules = replace(rules, ignore=tuple(rules.ignore) + CLIENT_ID_PATHS)
        # compared without them, and never quoted in a miss
        self._secrets = rules.secrets if secrets is None else secrets
        self._where = where  # the handshake and the file, for messages
        self._interface = interface  # how a miss spells the option to record again
        self.received = 0  # client messages so far
        self.over = False  # a miss ended it

    def opening(self) -> Reply:
        """What the server said before the client's first message."""
        runs = [s.server_run() for s in self._alive]
        return self._reply(self._alive[0], runs[0], 0.0)

    def receive(self, payload: Body) -> Reply:
        """The answer to the client's next message: the server messages that followed it in
        the first recording that still matches, or a miss."""
        self.received += 1
        asked = self._canonical(payload)
        kept = [s for s in self._alive if self._matches(s, asked)]
        if not kept:
            self.over = True
            return Reply(miss=self._miss(payload, asked))
        self._alive = kept
        current = kept[0]
        anchor = current.conversation.messages[current.cursor].t
        for script in kept:
            script.cursor += 1
        runs = [s.server_run() for s in kept]
        return self._reply(current, runs[0], anchor)

    def _matches(self, script: _Script, asked: Any) -> bool:
        recorded = script.next_client()
        return recorded is not None and self._canonical(recorded.payload) == asked

    def _canonical(self, payload: Body) -> Any:
        return canonical_message(payload, self._rules, self._secrets)

    @staticmethod
    def _reply(script: _Script, run: list[WebSocketMessage], anchor: float) -> Reply:
        close = (script.conversation.close or _DEFAULT_CLOSE) if script.ended else None
        return Reply(anchor=anchor, messages=run, close=close)

    def _miss(self, payload: Body, asked: Any) -> Miss:
        """The miss, compared with the nearest recorded message at this point."""
        nearest: tuple[list[str], Any] | None = None
        for script in self._alive:
            recorded = script.next_client()
            if recorded is None:
                continue
            expected = self._canonical(recorded.payload)
            diffs = difference.diff_paths(asked, expected)
            if nearest is None or len(diffs) < len(nearest[0]):
                nearest = (diffs, expected)
        shown = (
            quote(asked)
            if payload.kind != "base64"
            else f"<{len(payload.to_bytes())} bytes, binary>"
        )
        head = (
            f"cassette miss: WebSocket message {self.received} from the client on "
            f"{self._where} matches no recording"
        )
        if nearest is None:
            text = (
                f"{head}: the recording has no more client messages at this point (it "
                f"holds {self.received - 1}). Message: {shown}."
            )
            path = None
        else:
            diffs, expected = nearest
            where = ", ".join(diffs[:8]) + (" ..." if len(diffs) > 8 else "")
            text = (
                f"{head}: it differs at {clip(where)}. Message: {shown}. "
                f"Recorded: {quote(expected)}."
            )
            path = diffs[0] if diffs else None
        event_id = (
            payload.value.get("event_id")
            if payload.kind == "json" and isinstance(payload.value, dict)
            else None
        )
        return Miss(
            f"{text} Record it again with {spell(self._interface, 'cassette_mode', 'record')}.",
            path,
            event_id if isinstance(event_id, str) else None,
        )


def error_event(miss: Miss, number: int) -> bytes:
    """The Realtime API's ``error`` event for a miss, which SDKs parse and raise."""
    return orjson.dumps(
        {
            "type": "error",
            "event_id": f"event_cassette_miss_{number}",
            "error": {
                "type": "invalid_request_error",
                "code": "cassette_miss",
                "message": miss.message,
                "param": miss.path,
                "event_id": miss.event_id,
            },
        }
    )


def miss_close_reason(miss: Miss) -> str:
    """A close reason (at most 123 bytes on the wire) naming where the message differed."""
    reason = "cassette miss" + (f" at {miss.path}" if miss.path else ": nothing recorded here")
    return reason.encode()[:120].decode("utf-8", "ignore")
