"""A key inside an AWS event stream chunk's base64 ``bytes`` member (Bedrock's
InvokeModelWithResponseStream) never reaches disk: recorded through a real mitmdump from the
local stand-in, whose chunks hold the model's JSON as a test spells it (spaces, ``\\u``
escapes, or plain text: none frames back exactly, so the recorder keeps them as base64); and
written by hand, where ``cassette verify`` flags it and ``cassette scrub`` removes it. A replay
still answers from both files. The test decodes every base64 member itself."""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
from pathlib import Path
from typing import Any

import httpx
import orjson
from botocore.eventstream import EventStreamBuffer
from click.testing import CliRunner

from proxy_addon.cli import main
from tests.conftest import counted
from tests.fake_keys import FAKES

SHAPED = dict(FAKES)
ANTHROPIC_KEY = SHAPED["an Anthropic key"]
AWS_KEY = SHAPED["an AWS access key id"]
KEYS = (ANTHROPIC_KEY, AWS_KEY)
PATH = "/model/anthropic.claude-3-haiku-20240307-v1:0/invoke-with-response-stream"
CHUNKS = [  # the model's JSON as sent: none of the first three is what orjson writes
    '{"type": "content_block_delta", "delta": {"type": "text_delta", "text": "key: '
    + ANTHROPIC_KEY
    + '"}}',
    '{"outputText":"caf\\u00e9 ' + AWS_KEY[:4] + "\\u0054" + AWS_KEY[5:] + '","index":0}',
    "plain text, not JSON: " + AWS_KEY,
    '{"type":"message_stop"}',  # exact: stored decoded, framed back byte for byte
]


def base64_members(value: Any) -> list[bytes]:
    """What every ``bytes`` member holding base64 in a cassette holds, at any depth."""
    found: list[bytes] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "bytes" and isinstance(v, str):
                found.append(base64.b64decode(v))
            found += base64_members(v)
    elif isinstance(value, list):
        for v in value:
            found += base64_members(v)
    return found


def assert_no_key(path: Path) -> None:
    """No key in the file's bytes, nor in what its base64 members hold, read as bytes and,
    where they are JSON, parsed (a ``\\u`` escape hides a key from the bytes alone)."""
    raw = path.read_bytes()
    texts = [raw]
    for inner in base64_members(orjson.loads(raw)):
        texts.append(inner)
        with contextlib.suppress(ValueError):  # not JSON
            texts.append(json.dumps(json.loads(inner), ensure_ascii=False).encode())
    found = [(k[:12], t[:80]) for t in texts for k in KEYS if k.encode() in t]
    assert not found, f"{path.name} holds {found}"


def invoke(client: httpx.Client, base: str) -> list[dict[str, Any]]:
    """The stream's messages as botocore reads them: each payload's ``bytes`` decoded."""
    with client.stream("POST", base + PATH, json={"chunks": CHUNKS}) as answer:
        assert answer.status_code == 200, answer.read()
        raw = b"".join(answer.iter_raw())
    buffer = EventStreamBuffer()
    buffer.add_data(raw)
    payloads = [json.loads(m.payload) for m in buffer]
    return [{**p, "bytes": base64.b64decode(p["bytes"]).decode()} for p in payloads]


def hand_written(folder: Path) -> Path:
    """A cassette written by hand: one chunk whose base64 holds JSON with spaces and a key."""
    inner = '{"generation": "my key ' + ANTHROPIC_KEY + '", "stop_reason": null}'
    doc = {
        "format": "llm-cassette",
        "version": 3,
        "request": {
            "method": "POST",
            "url": "http://bedrock.example/model/meta.llama3-8b-instruct-v1:0/"
            "invoke-with-response-stream",
            "headers": {"content-type": "application/json"},
            "body": {"prompt": "hi"},
        },
        "responses": [
            {
                "status": 200,
                "headers": [["content-type", "application/vnd.amazon.eventstream"]],
                "stream": {
                    "format": "eventstream",
                    "complete": True,
                    "events": [
                        {
                            "t": 0.01,
                            "headers": [
                                [":event-type", "chunk"],
                                [":content-type", "application/json"],
                                [":message-type", "event"],
                            ],
                            "data": {"bytes": base64.b64encode(inner.encode()).decode()},
                        }
                    ],
                },
            }
        ],
    }
    path = folder / "by-hand.json"
    path.write_text(json.dumps(doc, indent=2))
    return path


def test_a_key_in_a_base64_chunk_never_reaches_disk_and_the_replay_answers(
    tmp_path, proxies, http_upstream
):
    cassettes = tmp_path / "cassettes"
    recorder = proxies(cassettes, "record")
    with httpx.Client(proxy=recorder.url, timeout=20) as client:
        live = invoke(client, http_upstream.base_url)
    log = recorder.stop()
    assert [m["bytes"] for m in live] == CHUNKS  # the client got the stream as it was sent
    assert counted(log, "recorded") == (1,), log[-3000:]
    [recorded] = list(cassettes.rglob("*.json"))
    assert_no_key(recorded)
    assert not any(k in log for k in KEYS)

    # written by hand: verify flags it, scrub removes it
    by_hand = hand_written(cassettes)
    found = CliRunner().invoke(main, ["verify", "--dir", str(cassettes)])
    assert found.exit_code == 1, found.output
    assert "by-hand.json" in found.output and "events[0].data.bytes" in found.output
    assert recorded.name not in found.output, found.output  # the recorder scrubbed its file
    scrubbed = CliRunner().invoke(main, ["scrub", "--dir", str(cassettes)])
    assert scrubbed.exit_code == 0, scrubbed.output
    assert_no_key(by_hand)
    again = CliRunner().invoke(main, ["verify", "--dir", str(cassettes)])
    assert again.exit_code == 0, again.output

    # both replay: the chunks that held a key with <redacted> in its place
    http_upstream.stop()
    replayer = proxies(cassettes, "replay")
    verify = ssl.create_default_context(cafile=str(replayer.ca_cert))
    with httpx.Client(proxy=replayer.url, timeout=20, verify=verify) as client:
        replayed = invoke(client, http_upstream.base_url)
        with client.stream(
            "POST",
            "http://bedrock.example/model/meta.llama3-8b-instruct-v1:0/invoke-with-response-stream",
            json={"prompt": "hi"},
        ) as answer:
            by_hand_answer = b"".join(answer.iter_raw())
    log = replayer.stop()
    assert counted(log, "hits", "misses") == (2, 0), log[-3000:]
    texts = [m["bytes"] for m in replayed]
    assert "<redacted>" in texts[0] and "<redacted>" in texts[1] and "<redacted>" in texts[2]
    assert json.loads(texts[0])["delta"]["text"] == "key: <redacted>"
    assert json.loads(texts[1])["outputText"] == "café <redacted>"
    assert texts[2] == "plain text, not JSON: <redacted>"
    assert texts[3] == CHUNKS[3]  # a chunk with no key: the very bytes
    buffer = EventStreamBuffer()
    buffer.add_data(by_hand_answer)
    [message] = list(buffer)
    inner = json.loads(base64.b64decode(json.loads(message.payload)["bytes"]))
    assert inner == {"generation": "my key <redacted>", "stop_reason": None}
