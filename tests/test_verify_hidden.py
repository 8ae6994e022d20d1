"""``cassette verify`` finds what the writer would redact, the secrets no single string shows
among them, written by hand into cassettes (not by the code under test); ``cassette scrub``
removes them, and a replay still answers from the scrubbed files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import orjson
from click.testing import CliRunner

from proxy_addon.cli import main
from tests.conftest import counted
from tests.fake_keys import FAKES, rep

SHAPED = dict(FAKES)
P = {
    "bearer": "fake-verify-bearer-6001",  # the request's key, spelled across 4 events
    "proj": SHAPED["an OpenAI project, service or admin key"],  # spelled across 6-char events
    "tool": "fake-verify-tool-6002",  # {"api_key": ...} spelled across a tool call's events
    "password": "fake-verify-pw-6003",  # {"password": ...} in the request's tool-call history
    "ws": "fake-verify-ws-6004",  # {"client_secret": ...} in a WebSocket message's text
    "amz_header": "fake-verify-sts-6005",  # x-amz-security-token, and echoed in the answer
    "amz_signature": rep("fedcba9876543210", 64),  # ?X-Amz-Signature=
    "amz_token": "fake-verify-query-sts-6006",  # ?X-Amz-Security-Token=
    **{k: SHAPED[w] for k, w in (
        ("groq", "a Groq key"), ("xai", "an xAI key"), ("perplexity", "a Perplexity key"),
        ("replicate", "a Replicate token"), ("nvidia", "an NVIDIA key"),
        ("google_oauth", "a Google OAuth access token"), ("slack_app", "a Slack app token"),
    )},
    "test_id": "sk-test-verify-id-6007-abcdefgh",  # in the file's test_id
    "dir": "sk-test-verify-dir-6008-abcdefgh",  # in a test's directory name
}  # fmt: skip
URL = "http://api.example/v1/chat/completions"
QUERY = f"?X-Amz-Signature={P['amz_signature']}&X-Amz-Security-Token={P['amz_token']}"
HISTORY = {
    "model": "gpt-4o",
    "stream": True,
    "messages": [
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "login", "arguments": (
                    json.dumps({"user": "me", "password": P["password"]}))}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
    ],
}  # fmt: skip


def cut(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def chunk(delta: dict[str, Any]) -> dict[str, Any]:
    return {"t": 0.01, "data": {"id": "chatcmpl-1", "choices": [{"index": 0, "delta": delta}]}}


def placed() -> dict[str, Any]:
    """One cassette of ours holding every placement but the WebSocket's and the directory's."""
    said = f"your key {P['bearer']} and {P['proj']} bye"
    args = json.dumps({"city": "Paris", "api_key": P["tool"]})
    events = [chunk({"content": piece}) for piece in cut(said, 6)]
    events += [
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
        for piece in cut(args, 7)
    ]
    events.append({"t": 0.02, "data": "[DONE]"})
    shapes = " ".join(P[k] for k in SHAPE_PLACES)
    return {
        "format": "llm-cassette",
        "version": 1,
        "test_id": f"tests/test_x.py::test_y[{P['test_id']}]",
        "request": {
            "method": "POST",
            "url": URL + QUERY,
            "headers": {
                "authorization": f"Bearer {P['bearer']}",
                "content-type": "application/json",
                "x-amz-security-token": P["amz_header"],
            },
            "body": HISTORY,
        },
        "responses": [
            {
                "status": 200,
                "headers": [["content-type", "text/event-stream"]],
                "stream": {"format": "sse", "complete": True, "events": events},
            },
            {
                "status": 200,
                "headers": [["content-type", "application/json"]],
                "body": {"heard": f"sts said {P['amz_header']}", "shapes": shapes},
            },
        ],
    }


SHAPE_PLACES = ("groq", "xai", "perplexity", "replicate", "nvidia", "google_oauth", "slack_app")


def websocket() -> dict[str, Any]:
    secret = json.dumps({"client_secret": P["ws"], "expires_at": 1700000000})
    return {
        "format": "llm-cassette",
        "version": 2,
        "request": {"method": "GET", "url": "wss://api.example/v1/realtime", "headers": {}},
        "responses": [
            {
                "status": 101,
                "headers": [],
                "websocket": {
                    "messages": [
                        {"t": 0.1, "from": "server", "data": {
                            "type": "response.output_text.done", "text": secret}},
                    ],
                    "close": {"t": 0.2, "from": "client", "code": 1000, "reason": ""},
                },
            }
        ],
    }  # fmt: skip


def test_verify_names_every_hidden_secret_scrub_removes_them_and_replay_answers(
    tmp_path: Path, proxies
):
    cassettes = tmp_path / "cassettes"
    ours = cassettes / "api.example" / "v1" / "chat" / "completions" / "gpt-4o-placed.json"
    socket = cassettes / "api.example" / "v1" / "realtime" / "get-placed.json"
    named = cassettes / "by-test" / f"test_y_{P['dir']}" / "api.example" / "models.json"
    for path, doc in ((ours, placed()), (socket, websocket())):
        path.parent.mkdir(parents=True)
        path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    named.parent.mkdir(parents=True)
    request = {"method": "GET", "url": "http://api.example/v1/models", "headers": {}}
    answer = {"status": 200, "headers": [], "body": {"data": []}}
    named.write_bytes(
        orjson.dumps(
            {"format": "llm-cassette", "version": 1, "request": request, "responses": [answer]}
        )
    )

    found = CliRunner().invoke(main, ["verify", "--dir", str(cassettes)])
    assert found.exit_code == 1
    shown_named = str(named).replace(P["dir"], "<redacted>")
    for where in [
        f"{ours}: request.url: query parameter X-Amz-Signature (by name)",
        f"{ours}: request.url: query parameter X-Amz-Security-Token (by name)",
        f"{ours}: request.headers.x-amz-security-token: header x-amz-security-token (by name)",
        f"{ours}: request.body.messages[0].tool_calls[0].function.arguments: field password, "
        "in JSON inside the string (by name)",
        f"{ours}: responses[0].stream.events[1].data.choices[0].delta.content: "
        "a value redacted by name in this exchange, spelled across events 1 to 5 (by value)",
        f"{ours}: responses[0].stream.events[6].data.choices[0].delta.content: "
        "an OpenAI project, service or admin key, spelled across events 6 to",
        f"{ours}: responses[0].stream.events[",
        "].data.choices[0].delta.tool_calls[0].function.arguments: field api_key, spelled across",
        f"{ours}: responses[1].body.heard: a value redacted by name in this exchange (by value)",
        *(f"{ours}: responses[1].body.shapes: {w} (by shape)" for w in (
            "a Groq key", "an xAI key", "a Perplexity key", "a Replicate token", "an NVIDIA key",
            "a Google OAuth access token", "a Slack app token")),
        f"{ours}: test_id: an sk-... API key (by shape)",
        f"{socket}: responses[0].websocket.messages[0].data.text: field client_secret, "
        "in JSON inside the string (by name)",
        f"{shown_named}: its path holds an sk-... API key (by shape)",
    ]:  # fmt: skip
        assert where in found.output, where
    assert P["dir"] not in found.output and f"{shown_named}: " not in found.output.replace(
        f"{shown_named}: its path holds an sk-... API key (by shape)", ""
    )  # a readable file: its path is all there is

    scrubbed = CliRunner().invoke(main, ["scrub", "--dir", str(cassettes)])
    assert scrubbed.exit_code == 1  # the directory's name: scrub does not rename
    assert "1 files have a secret in their path" in scrubbed.output
    for path in (ours, socket):
        raw = path.read_text()
        for name, secret in P.items():
            assert secret not in raw, (path, name)
    spelt = "".join(
        e["data"]["choices"][0]["delta"].get("content", "")
        for e in orjson.loads(ours.read_bytes())["responses"][0]["stream"]["events"][:-1]
    )
    assert spelt == "your key <redacted> and <redacted> bye"
    named.unlink()
    again = CliRunner().invoke(main, ["verify", "--dir", str(cassettes)])
    assert again.exit_code == 0, again.output

    proxy = proxies(cassettes, "replay")
    with httpx.Client(proxy=proxy.url, timeout=20) as client:
        headers = {"authorization": "Bearer another-key", "x-amz-security-token": "another"}
        stream = client.post(URL + QUERY, json=HISTORY, headers=headers)
        echo = client.post(URL + QUERY, json=HISTORY, headers=headers)
    log = proxy.stop()
    assert counted(log, "hits", "misses") == (2, 0), log[-2000:]
    datas = [line[6:] for line in stream.text.splitlines() if line.startswith("data: ")]
    assert len(datas) == len(placed()["responses"][0]["stream"]["events"])
    assert (
        "".join(json.loads(d)["choices"][0]["delta"].get("content", "") for d in datas[:-1])
        == spelt
    )
    assert echo.json()["heard"] == "sts said <redacted>"
