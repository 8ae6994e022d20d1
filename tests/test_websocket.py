"""Unit tests: the WebSocket section of the format, and a replay's choice of answers among
recordings (hand-built conversations in, messages out). The end-to-end tests through mitmdump
and the openai SDK are in test_realtime.py."""

from __future__ import annotations

import base64

import orjson
import pytest

from proxy_addon import formats
from proxy_addon.bodies.websocket import payload_of
from proxy_addon.formats import cassette
from proxy_addon.matching import jsonpath
from proxy_addon.matching.canonical import Rules
from proxy_addon.model import (
    Body,
    CassetteError,
    RecordedRequest,
    RecordedResponse,
    Recording,
    WebSocketClose,
    WebSocketConversation,
    WebSocketMessage,
)
from proxy_addon.redaction.secret_rules import REDACTED, Secrets
from proxy_addon.serving.websocket_replay import Replay

URL = "https://api.openai.com/v1/realtime?model=gpt-realtime"


def text(side: str, value: dict | str, t: float = 0.0) -> WebSocketMessage:
    raw = value if isinstance(value, str) else orjson.dumps(value).decode()
    return WebSocketMessage(side, payload_of(raw.encode(), True), t)  # type: ignore[arg-type]


def user(words: str, event_id: str = "evt_1") -> dict:
    return {
        "type": "conversation.item.create",
        "event_id": event_id,
        "item": {
            "type": "message",
            "role": "user",
            "id": f"item_{event_id}",
            "content": [{"type": "input_text", "text": words}],
        },
    }


def conversation(answer: str, question: str = "hi") -> WebSocketConversation:
    return WebSocketConversation(
        [
            text("server", {"type": "session.created", "id": answer}),
            text("client", user(question)),
            text("server", {"type": "response.output_text.delta", "delta": answer}, 0.5),
            text("server", {"type": "response.done"}, 0.75),
        ],
        WebSocketClose("client", 1000, "bye", 1.0),
    )


def sent(reply) -> list:
    return [m.payload.value for m in reply.messages]


def test_websocket_recording_round_trips_and_only_it_is_version_2():
    audio = bytes(range(256)) * 3 + b"\x00\xff"
    conv = WebSocketConversation(
        [
            text("server", {"type": "session.created"}, 0.01),
            text("client", "not json", 0.5),
            WebSocketMessage("client", payload_of(audio, False), 0.75),
            text("server", "[1, 2]", 1),
        ],
        WebSocketClose("server", 4000, "done", 2.0),
    )
    rec = Recording(
        RecordedRequest("GET", URL, {"authorization": "<redacted>"}),
        [RecordedResponse(101, [["upgrade", "websocket"]], websocket=conv)],
    )
    raw = cassette.dumps(rec)
    doc = orjson.loads(raw)
    assert doc["version"] == 2
    messages = doc["responses"][0]["websocket"]["messages"]
    assert messages[0] == {"t": 0.01, "from": "server", "data": {"type": "session.created"}}
    assert messages[1] == {"t": 0.5, "from": "client", "text": "not json"}
    assert base64.b64decode(messages[2]["base64"]) == audio
    assert messages[3]["data"] == [1, 2]
    assert doc["responses"][0]["websocket"]["close"] == {
        "t": 2.0,
        "from": "server",
        "code": 4000,
        "reason": "done",
    }
    assert formats.loads(raw).responses[0].websocket == conv
    http = Recording(
        RecordedRequest("GET", "https://api.openai.com/v1/models"),
        [RecordedResponse(200, body=Body("json", {"data": []}))],
    )
    assert orjson.loads(cassette.dumps(http))["version"] == 1


def _doc(response: dict) -> bytes:
    return orjson.dumps(
        {"version": 2, "request": {"method": "GET", "url": URL}, "responses": [response]}
    )


@pytest.mark.parametrize(
    "response, reason",
    [
        ({"status": 101}, "responses[0] is a 101 answer with no 'websocket' section"),
        ({"status": 200, "websocket": {"messages": []}}, "responses[0].websocket belongs to a 101"),
        ({"status": 101, "websocket": {}}, "responses[0].websocket.messages must be a list"),
        (
            {"status": 101, "websocket": {"messages": [{"from": "me", "text": "x"}]}},
            "responses[0].websocket.messages[0].from must be 'client' or 'server'",
        ),
        (
            {
                "status": 101,
                "websocket": {"messages": [{"from": "client", "text": "x", "data": {}}]},
            },
            "responses[0].websocket.messages[0] must have exactly one of data / text / base64",
        ),
        (
            {"status": 101, "websocket": {"messages": [{"from": "client", "data": "x"}]}},
            "responses[0].websocket.messages[0].data must be a JSON object or array",
        ),
        (
            {"status": 101, "websocket": {"messages": [{"from": "server", "base64": "%%"}]}},
            "responses[0].websocket.messages[0].base64 is not valid base64",
        ),
        (
            {
                "status": 101,
                "websocket": {"messages": [], "close": {"from": "client", "code": 999}},
            },
            "responses[0].websocket.close.code must be a WebSocket close code",
        ),
    ],
)
def test_a_bad_websocket_section_is_refused_naming_the_field(response, reason):
    with pytest.raises(CassetteError) as e:
        formats.loads(_doc(response), "x.json")
    assert reason in e.value.reason


def test_replay_sends_the_opening_then_answers_each_matching_message():
    replay = Replay([conversation("A")], Rules(), "GET x")
    opening = replay.opening()
    assert sent(opening) == [{"type": "session.created", "id": "A"}] and opening.close is None
    # the client's own ids (event_id, item.id) differ from the recording's: still a match
    reply = replay.receive(payload_of(orjson.dumps(user("hi", "evt_other")), True))
    assert sent(reply) == [
        {"type": "response.output_text.delta", "delta": "A"},
        {"type": "response.done"},
    ]
    assert reply.anchor == 0.0 and reply.close == WebSocketClose("client", 1000, "bye", 1.0)
    assert reply.close_delay(0) == 1.0  # the grace for a client that closed in the recording
    assert reply.close_delay(1) == 2.0  # plus the recorded gap when paced


def test_replay_narrows_among_recordings_of_one_handshake():
    replay = Replay([conversation("A", "first"), conversation("B", "second")], Rules(), "GET x")
    assert sent(replay.opening())[0]["id"] == "A"  # the one in turn speaks first
    reply = replay.receive(payload_of(orjson.dumps(user("second")), True))
    assert sent(reply)[0]["delta"] == "B"  # only B recorded this message
    miss = replay.receive(payload_of(b"one more", True)).miss
    assert miss is not None and miss.path is None
    assert "no more client messages" in miss.message


def test_a_changed_message_is_a_miss_naming_the_path_and_ignore_paths_apply():
    asked = user("HI THERE", "evt_9")
    replay = Replay([conversation("A")], Rules(), "GET x")
    replay.opening()
    miss = replay.receive(payload_of(orjson.dumps(asked), True)).miss
    assert miss is not None and miss.path == "item.content[0].text"
    assert miss.event_id == "evt_9" and "differs at item.content[0].text" in miss.message
    ignoring = Replay([conversation("A")], Rules((jsonpath.parse_path("item.content"),)), "GET x")
    ignoring.opening()
    assert ignoring.receive(payload_of(orjson.dumps(asked), True)).miss is None


def test_a_client_message_holding_the_handshakes_key_matches_its_scrubbed_recording():
    """The recording keeps ``<redacted>`` where the client sent its key; the key a live
    handshake carries is known to the replay, compared as the recording stores it, and never
    quoted in a miss."""
    key = "fake-realtime-key-0001"  # no key's shape: only knowing it replaces it
    rules = Secrets().with_values([key])
    stored = WebSocketConversation(
        [
            text("client", user(f"my key is {REDACTED}")),
            text("server", {"type": "response.done"}),
            text("client", f"plain {REDACTED}"),
            text("server", "ok"),
        ]
    )
    replay = Replay([stored], Rules(), "GET x", secrets=rules)
    assert replay.receive(payload_of(orjson.dumps(user(f"my key is {key}")), True)).miss is None
    assert replay.receive(payload_of(f"plain {key}".encode(), True)).miss is None
    missing = Replay([stored], Rules(), "GET x", secrets=rules)
    miss = missing.receive(payload_of(orjson.dumps(user(f"other {key}")), True)).miss
    assert miss is not None and key not in miss.message and REDACTED in miss.message


def test_binary_messages_match_by_their_bytes():
    chunk = bytes(range(200))
    conv = WebSocketConversation(
        [WebSocketMessage("client", payload_of(chunk, False)), text("server", "ok")]
    )
    assert Replay([conv], Rules(), "x").receive(payload_of(chunk, False)).miss is None
    assert (
        Replay([conv], Rules(), "x").receive(payload_of(chunk[:-1] + b"!", False)).miss is not None
    )
    assert Replay([conv], Rules(), "x").receive(payload_of(chunk, True)).miss is not None
