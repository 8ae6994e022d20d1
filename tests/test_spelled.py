"""Secrets no single string shows (unit tests of the redaction step): cut across stream events,
inside JSON that is itself a string, cloud credentials by name, every key shape, and the names
the proxy makes. Files are judged by their bytes and by plain JSON, not by the proxy's reader.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy_addon.bodies.pieces import pieces
from proxy_addon.bodies.reassemble import reassemble, reassemble_websocket
from proxy_addon.bodies.sse import Event, Unparsed, split
from proxy_addon.formats import cassette, exchange
from proxy_addon.model import (
    Body,
    RecordedRequest,
    RecordedResponse,
    Recording,
    Stream,
    WebSocketConversation,
    WebSocketMessage,
)
from proxy_addon.redaction import redact, spelled
from proxy_addon.redaction.secret_rules import REDACTED, Secrets
from proxy_addon.redaction.shapes import SHAPES
from proxy_addon.runner.control import CurrentTest
from proxy_addon.store.layout import layout_path, per_test_dir
from tests.conftest import FIXTURES, SEED
from tests.fake_keys import FAKES, ORDINARY
from tests.keys import key_of, recorded_key
from tests.on_disk import spelled_texts

RULES = Secrets()


def stored(rec: Recording, secrets: Secrets = RULES) -> tuple[bytes, list[redact.Finding]]:
    """The file the writer makes of ``rec``, and what the scrub found."""
    out, findings = redact.scrub(rec, secrets)
    return cassette.dumps(out), findings


def stream_of(events: list[Event]) -> Recording:
    return Recording(
        RecordedRequest("POST", "https://api.example/v1/chat/completions", {}),
        [
            RecordedResponse(
                200, [["content-type", "text/event-stream"]], stream=Stream("sse", events)
            )
        ],
    )


# -- every shape -------------------------------------------------------------------------------


@pytest.mark.parametrize("what,fake", FAKES, ids=[f"{i}-{w}" for i, (w, _) in enumerate(FAKES)])
def test_every_key_shape_is_found_in_a_prompt_and_replaced(what, fake):
    text = f"please use {fake} now"
    new, hits = RULES.replace(text)
    assert ("shape", what) in hits
    assert new.startswith("please use ") and new.endswith(" now") and REDACTED in new
    core = fake.split("=", 1)[1] if "=" in fake[:24] else fake.removeprefix("Bearer ")
    assert core[-12:] not in new
    body = orjson.dumps({"messages": [{"role": "user", "content": text}]})
    assert RULES.might_hold(body) and RULES.might_hold(json.dumps(text).encode())


def test_every_shape_has_a_fake_and_ordinary_strings_are_left_alone():
    for shape in SHAPES:
        rx = re.compile((f"(?:{shape.keep})" if shape.keep else "") + shape.pattern)
        assert any(rx.search(fake) for what, fake in FAKES if what == shape.what), shape.what
    for text in ORDINARY:
        assert RULES.replace(text) == (text, []), text


# -- split across events -----------------------------------------------------------------------

SPLIT_SECRETS = [fake for _, fake in FAKES if "\n" not in fake] + ["plain-flow-key-5001"]
FORMATS = {
    "openai": lambda piece: ({"choices": [{"index": 0, "delta": {"content": piece}}]}, None),
    "anthropic": lambda piece: (
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
        "content_block_delta",
    ),
    "responses": lambda piece: (
        {"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0,
         "content_index": 0, "delta": piece},
        "response.output_text.delta",
    ),
    "tool arguments": lambda piece: (
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": piece}}]}}]},
        None,
    ),
    "plain text": lambda piece: (piece, None),
}  # fmt: skip
WORDS = st.text(alphabet="acdfgh ", max_size=12)  # no key, no "Bearer" can be spelt with it


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    secret=st.sampled_from(SPLIT_SECRETS),
    kind=st.sampled_from(sorted(FORMATS)),
    as_json=st.booleans(),
    before=WORDS,
    after=WORDS,
    cuts=st.lists(st.integers(0, 2000), max_size=40),
    pings=st.lists(st.integers(0, 40), max_size=4),
    parsed=st.booleans(),
)
def test_a_secret_split_anywhere_over_any_number_of_events_is_never_on_disk(
    secret, kind, as_json, before, after, cuts, pings, parsed
):
    """A key (of any shape, or the flow's own), or a tool call's ``{"password": ...}``, cut
    at random points over a random number of events, some empty, with other events between:
    not in the file's bytes nor in what its events spell; the events keep their number and
    names, and spell the text with ``<redacted>`` in the secret's place."""
    secrets = RULES.with_values([secret]) if secret.startswith("plain-") else RULES
    if as_json:
        text = json.dumps({"city": before, "password": secret, "note": after})
        expected = text.replace(json.dumps(secret), json.dumps(REDACTED))
    else:
        text = f"{before} {secret} {after}"
        expected = f"{before} {secrets.replace(secret)[0]} {after}"
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    events = []
    for n, (a, b) in enumerate(zip(points, points[1:] + [len(text)])):
        if n in pings:
            events.append(Event(data={"type": "ping"}, event="ping"))
        data, name = FORMATS[kind](text[a:b])
        if parsed or isinstance(data, str):
            events.append(Event(data=data, event=name))
        else:
            events.append(Event(data=Unparsed(orjson.dumps(data).decode()), event=name))
    raw, findings = stored(stream_of(events), secrets)
    kept = "" if as_json else secrets.replace(secret)[0].split(REDACTED)[0]  # "Bearer ", "sig="
    core = secret[len(kept) :]
    doc = orjson.loads(raw)
    spelt = spelled_texts(doc)
    for form in (core, json.dumps(core)[1:-1]):
        assert form.encode() not in raw and all(form not in s for s in spelt)
    assert expected in spelt and findings
    stored_events = doc["responses"][0]["stream"]["events"]
    assert [e.get("event") for e in stored_events] == [e.event for e in events]


# -- inside JSON that is a string --------------------------------------------------------------


def test_json_inside_a_string_is_walked_by_name_and_keeps_its_spacing():
    args = '{"user": "me",  "password": "hunter2", "nested": "{\\"api_key\\": \\"k-5002\\"}"}'
    rec = Recording(
        RecordedRequest(
            "POST",
            "https://api.example/v1/chat/completions",
            {"content-type": "application/json"},
            Body(
                "json",
                {
                    "messages": [
                        {"role": "assistant", "tool_calls": [{"function": {"arguments": args}}]}
                    ]
                },
            ),
        ),
        [
            RecordedResponse(
                200,
                [["content-type", "application/json"]],
                body=Body(
                    "json",
                    {
                        "output": [
                            {"type": "function_call", "arguments": '{"client_secret":"cs-5003"}'}
                        ]
                    },
                ),
            )
        ],
    )
    raw, findings = stored(rec)
    for secret in (b"hunter2", b"k-5002", b"cs-5003"):
        assert secret not in raw
    doc = orjson.loads(raw)
    new_args = doc["request"]["body"]["messages"][0]["tool_calls"][0]["function"]["arguments"]
    assert new_args.startswith('{"user": "me",  "password": "<redacted>", "nested": ')
    assert json.loads(json.loads(new_args)["nested"]) == {"api_key": REDACTED}
    assert doc["responses"][0]["body"]["output"][0]["arguments"] == '{"client_secret":"<redacted>"}'
    assert {f.path for f in findings} == {
        "request.body.messages[0].tool_calls[0].function.arguments",
        "responses[0].body.output[0].arguments",
    }
    # the same request, live, keys as its recording: the replay finds it
    live = key_of(
        "POST",
        "https://api.example/v1/chat/completions",
        "application/json",
        orjson.dumps(rec.request.body.value),
    )
    assert live == recorded_key(cassette.from_dict(doc).request)


def test_a_websocket_text_field_holding_json_is_walked_and_deltas_are_joined():
    minted = json.dumps({"client_secret": "ek_fake_5004", "expires_at": 1700000000})
    conversation = WebSocketConversation(
        [
            WebSocketMessage(
                "server", Body("json", {"type": "response.output_text.done", "text": minted})
            ),
            WebSocketMessage("client", Body("json", {"type": "response.create"})),
            *(
                WebSocketMessage(
                    "server",
                    Body(
                        "json",
                        {"type": "response.output_text.delta", "item_id": "i", "delta": part},
                    ),
                )
                for part in ("your key: fake-ws-", "bearer-", "5005 ok")
            ),
        ]
    )
    rec = Recording(
        RecordedRequest(
            "GET", "wss://api.example/v1/realtime", {"authorization": "Bearer fake-ws-bearer-5005"}
        ),
        [RecordedResponse(101, [], websocket=conversation)],
    )
    raw, findings = stored(rec)
    assert b"ek_fake_5004" not in raw and b"fake-ws-" not in raw and b"bearer-5005" not in raw
    done = redact.scrub(rec, RULES)[0].responses[0].websocket
    assert json.loads(done.messages[0].payload.value["text"])["client_secret"] == REDACTED
    assert reassemble_websocket(done).text == "your key: <redacted> ok"
    assert [m.side for m in done.messages] == [m.side for m in conversation.messages]
    assert {f.path for f in findings} >= {
        "responses[0].websocket.messages[2].data.delta",
        "responses[0].websocket.messages[0].data.text",
    }


# -- cloud credentials by name -----------------------------------------------------------------


def test_cloud_credentials_are_secret_by_name_in_headers_queries_and_bodies():
    token, sig, cred = "fake-sts-token-5006", "ab" * 32, "AKIATESTFAKE00000000/20260101/x"
    query = (
        f"X-Amz-Credential={cred}&X-Amz-Signature={sig}&X-Amz-Security-Token={token}q"
        "&X-Amz-Date=20260101T000000Z&sv=2024&sig=fakeSasSig5007&access_token=fake-goog-5008"
    )
    headers = [("x-amz-security-token", token), ("content-type", "application/json")]
    secrets = RULES.with_values(exchange.header_values(headers, RULES))
    body = {
        "SecretAccessKey": "fake-aws-secret-5009",
        "echo": f"got {token}",
        "access_token": "fake-goog-5010",
    }
    rec = Recording(
        exchange.recorded_request(
            "PUT",
            f"https://bucket.s3.amazonaws.com/o?{query}",
            headers,
            orjson.dumps(body),
            secrets,
        ),
        [RecordedResponse(200)],
    )
    raw, findings = stored(rec, secrets)
    for secret in (
        token,
        sig,
        cred,
        "fakeSasSig5007",
        "fake-goog-5008",
        "fake-aws-secret-5009",
        "fake-goog-5010",
    ):
        assert secret.encode() not in raw, secret
    url = orjson.loads(raw)["request"]["url"]
    assert "X-Amz-Date=20260101T000000Z" in url and "sv=2024" in url
    assert orjson.loads(raw)["request"]["headers"]["x-amz-security-token"] == REDACTED
    assert {f.what for f in findings} >= {
        "header x-amz-security-token",
        "query parameter X-Amz-Signature",
        "query parameter X-Amz-Security-Token",
        "query parameter X-Amz-Credential",
        "query parameter sig",
        "query parameter access_token",
        "field SecretAccessKey",
        "field access_token",
    }


def test_a_sigv4_signature_is_a_known_secret_wherever_it_appears():
    """The Authorization header is redacted by name; its signature (64 hex, no known shape)
    and key id are learnt from it, so an echo of either (a stand-in, an error message) goes
    too."""
    signature, key_id = "5e" * 32, "AKIA" + "CASSETTETEST" + "0042"
    authorization = (
        f"AWS4-HMAC-SHA256 Credential={key_id}/20261203/us-east-1/bedrock/aws4_request, "
        f"SignedHeaders=content-type;host;x-amz-date, Signature={signature}"
    )
    headers = [("authorization", authorization), ("content-type", "application/json")]
    secrets = RULES.with_values(exchange.header_values(headers, RULES))
    echo = {"message": f"signed {signature}"}
    rec = Recording(
        exchange.recorded_request(
            "POST",
            "https://bedrock-runtime.us-east-1.amazonaws.com/model/m/converse",
            headers,
            b"{}",
            secrets,
        ),
        [RecordedResponse(403, [], Body("json", echo))],
    )
    raw, _ = stored(rec, secrets)
    assert signature.encode() not in raw and b"SignedHeaders" not in raw
    assert orjson.loads(raw)["responses"][0]["body"]["message"].startswith("signed <redacted>")


# -- the text pieces spell is what reassemble builds -------------------------------------------


def test_pieces_spell_what_reassemble_shows_for_every_providers_stream():
    """``bodies/pieces.py`` and ``reassemble`` name the same fields: over every stream in the
    fixtures and one per provider shape, the pieces of each kind join to the text, the
    reasoning and the tool calls' arguments ``cassette text`` shows."""
    from proxy_addon import formats

    streams = []
    for path in [SEED, *sorted(FIXTURES.rglob("*.json"))]:
        for response in formats.load(path).responses:
            if response.stream is not None:
                streams.append(response)
    streams.append(RecordedResponse(200, stream=Stream("sse", split("sse", SAMPLE_STREAMS))))
    assert len(streams) > 5
    for response in streams:
        shown = reassemble(response)
        text = reasoning = ""
        arguments: dict[Any, str] = {}
        for ev in response.stream.events:
            data = orjson.loads(ev.data) if isinstance(ev.data, Unparsed) else ev.data
            for channel, _, piece in pieces(data) if not isinstance(data, str) else []:
                role = ROLES.get(
                    channel[-1] if channel[0] != "choice" or len(channel) == 3 else "call"
                )
                if role is None and isinstance(channel[0], str):
                    role = ROLES.get(channel[0])
                if role == "text":
                    text += piece
                elif role == "reasoning":
                    reasoning += piece
                elif role == "arguments":
                    arguments[channel] = arguments.get(channel, "") + piece
        assert (text, reasoning) == (shown.text, shown.reasoning)
        assert sorted(arguments.values()) == sorted(c.arguments for c in shown.tool_calls)


# what each channel of ``pieces`` is, as ``reassemble`` shows it
ROLES = {
    "content": "text",
    "text": "text",
    "response": "text",
    "response.output_text.delta": "text",
    "reasoning_content": "reasoning",
    "reasoning": "reasoning",
    "thinking": "reasoning",
    "response.reasoning_text.delta": "reasoning",
    "response.reasoning_summary_text.delta": "reasoning",
    "call": "arguments",
    "partial_json": "arguments",
    "response.function_call_arguments.delta": "arguments",
}


SAMPLE_STREAMS = b"".join(
    b"data: " + orjson.dumps(d) + b"\n\n"
    for d in [
        {"choices": [{"index": 0, "delta": {"reasoning_content": "think "}}]},
        {"choices": [{"index": 0, "delta": {"content": "Hel"}}]},
        {"choices": [{"index": 0, "delta": {"content": "lo"}}]},
        *(
            {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": a}}]}}]}
            for a in ('{"a"', ": 1}")
        ),
    ]
)  # fmt: skip


# -- names the proxy makes ---------------------------------------------------------------------


def test_names_the_proxy_makes_hold_no_secret_and_stay_the_same_across_runs():
    key = "sk-test-named-5011-abcdefghij"
    a = per_test_dir(f"tests/test_a.py::test_x[{key}]")
    b = per_test_dir("tests/test_a.py::test_x[sk-test-other-5012-abcdefghij]")
    assert a == b and "redacted" in a and "sk-test" not in a
    assert per_test_dir("tests/test_a.py::test_y") == "tests__test_a.py__test_y"
    flow = RULES.with_values(["plain-flow-5013"])
    current = CurrentTest()
    current.begin("tests/t.py::test_z[plain-flow-5013]", "tests/t.py::test_z[plain-flow-5013]")
    test_id, test_dir = current.names(flow)
    assert test_id == "tests/t.py::test_z[<redacted>]" and "plain-flow" not in test_dir
    assert current.names(flow, f"header {key}") == (f"header {REDACTED}", test_dir)
    canon = key_of("POST", "https://h/v1/x", "application/json", b'{"model": "m"}')
    path = layout_path(Path("/tmp/c"), canon, "https://h/v1/x", f"ft:{key}")
    assert key not in str(path) and "redacted" in path.name


def test_a_long_answer_is_read_in_windows_and_a_key_across_a_windows_edge_is_found(monkeypatch):
    """An answer longer than the window it is read in (made 4,096 characters here, with an
    overlap of 512), in pieces of 97, with keys placed across the edges of the windows and of
    the overlaps."""
    window, overlap = 4096, 512
    monkeypatch.setattr(spelled, "_WINDOW", window)
    monkeypatch.setattr(spelled, "_OVERLAP", overlap)
    key = "sk-test-window-5014-" + "abcdefghij" * 3
    at = [100, window - overlap - 10, window - 15, 2 * window - overlap - 3, 3 * window + 7]
    text = "lorem ipsum dolor " * 900
    for n in reversed(at):
        text = text[:n] + f" {key} " + text[n:]
    events = [
        Event(data={"choices": [{"delta": {"content": text[i : i + 97]}}]})
        for i in range(0, len(text), 97)
    ]
    raw, findings = stored(stream_of(events))
    assert key.encode() not in raw and len(findings) == len(at)
    assert max(spelled_texts(orjson.loads(raw)), key=len) == text.replace(key, REDACTED)
