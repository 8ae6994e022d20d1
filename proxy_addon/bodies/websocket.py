"""WebSocket messages as a recording holds them: a payload as JSON, text or bytes, and the
capture of a conversation while it is recorded."""

from __future__ import annotations

import base64

from proxy_addon.model import (
    Body,
    Side,
    WebSocketClose,
    WebSocketConversation,
    WebSocketMessage,
    json_value,
)


def side_of(from_client: bool) -> Side:
    return "client" if from_client else "server"


def payload_of(content: bytes, is_text: bool) -> Body:
    """A message's payload as stored: parsed JSON when a text message holds a JSON object or
    array, the text otherwise, and base64 for a binary message."""
    if not is_text:
        return Body("base64", base64.b64encode(content).decode())
    value = json_value(content)
    return (
        Body("json", value)
        if value is not None
        else Body("text", content.decode("utf-8", "replace"))
    )


def wire_payload(payload: Body) -> tuple[bytes, bool]:
    """What a replay sends for a stored payload: its bytes, and whether it is a text message."""
    return payload.to_bytes(), payload.kind != "base64"


class Capture:
    """A conversation being recorded: messages appended as mitmproxy relays them."""

    def __init__(self, started: float) -> None:
        self.started = started  # wall-clock time of the handshake (mitmproxy's timestamps)
        self.conversation = WebSocketConversation()

    def message(self, from_client: bool, is_text: bool, content: bytes, at: float) -> None:
        self.conversation.messages.append(
            WebSocketMessage(
                side_of(from_client), payload_of(content, is_text), max(0.0, at - self.started)
            )
        )

    def close(self, by_client: bool, code: int, reason: str, at: float) -> None:
        self.conversation.close = WebSocketClose(
            side_of(by_client), code, reason or "", max(0.0, at - self.started)
        )
