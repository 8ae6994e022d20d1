"""The format: round trips, validation that names file and field, llama-stack reading."""

from __future__ import annotations

import orjson
import pytest

from proxy_addon import formats
from proxy_addon.bodies.sse import Event
from proxy_addon.formats import cassette
from proxy_addon.model import (
    Body,
    CassetteError,
    RecordedRequest,
    RecordedResponse,
    Recording,
    Stream,
)
from tests.conftest import FIXTURES, SEED
from tests.keys import recorded_key


def sample() -> Recording:
    return Recording(
        request=RecordedRequest(
            "POST",
            "https://api.openai.com/v1/chat/completions",
            {"content-type": "application/json"},
            Body("json", {"model": "gpt-4o", "messages": []}),
        ),
        responses=[
            RecordedResponse(
                200,
                [["content-type", "text/event-stream"]],
                stream=Stream(
                    "sse", [Event(data={"a": 1}, t=0.01), Event(data="[DONE]", event=None, t=0.02)]
                ),
                recorded_at="2026-11-26T00:00:00+00:00",
            ),
            RecordedResponse(429, [["retry-after", "7"]], body=Body("text", "slow down")),
            RecordedResponse(
                200,
                [["content-type", "audio/mpeg"]],
                body=Body.from_bytes(b"\x00\xffID3", "audio/mpeg"),
            ),
        ],
    )


def test_round_trip_is_lossless_and_stable():
    rec = sample()
    raw = cassette.dumps(rec)
    again = formats.loads(raw, "x.json")
    assert again == rec
    assert cassette.dumps(again) == raw  # stable bytes: small git diffs
    assert raw.decode().splitlines()[1:3] == ['  "format": "llm-cassette",', '  "version": 1,']


def test_body_kinds():
    assert Body.from_bytes(b'{"a": 1}', "application/json") == Body("json", {"a": 1})
    assert Body.from_bytes(b"hello", "text/plain") == Body("text", "hello")
    assert Body.from_bytes(b"\xff\xd8", None).kind == "base64"
    assert Body.from_bytes(b"RIFF", "audio/wav").kind == "base64"
    assert Body.from_bytes(b"", None) is None
    raw = bytes(range(256))
    assert Body.from_bytes(raw, None).to_bytes() == raw


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda d: d.pop("version"), "no 'version' field"),
        (lambda d: d.update(version=99), "format version 99 is newer"),
        (lambda d: d.update(responses=[]), "'responses' must be a non-empty list"),
        (lambda d: d["responses"][0].update(status="200"), "responses[0].status"),
        (lambda d: d["responses"][0]["stream"].update(format="xml"), "responses[0].stream.format"),
        (lambda d: d["responses"][0]["stream"]["events"][0].update(t=-1), "events[0].t"),
        (lambda d: d["request"].update(url="/relative"), "request.url"),
        (lambda d: d["responses"][2].update(body_base64="!!!"), "not valid base64"),
    ],
)
def test_invalid_documents_name_the_file_and_the_field(mutate, reason):
    doc = orjson.loads(cassette.dumps(sample()))
    mutate(doc)
    with pytest.raises(CassetteError) as err:
        formats.loads(orjson.dumps(doc), "cassettes/bad.json")
    assert reason in str(err.value)
    assert str(err.value).startswith("cassettes/bad.json: ")


def test_truncated_and_foreign_files():
    with pytest.raises(CassetteError, match=r"t\.json: not valid JSON"):
        formats.loads(cassette.dumps(sample())[:50], "t.json")
    with pytest.raises(CassetteError, match="not a cassette"):
        formats.loads(b'{"name": "package.json"}', "package.json")
    with pytest.raises(CassetteError, match="top level must be a JSON object"):
        formats.loads(b"[1, 2]", "list.json")


def test_seed_reads_as_a_host_agnostic_sse_stream():
    rec = formats.load(SEED)
    assert rec.source == "llama-stack" and rec.request.any_host
    assert rec.request.url == "https://api.openai.com/v1/chat/completions"  # endpoint, not /v1/v1
    stream = rec.responses[0].stream
    assert stream.format == "sse" and len(stream.events) == 18
    assert stream.events[-1].data == "[DONE]"
    assert stream.events[1].data["choices"][0]["delta"]["content"] == "Why"
    canon = recorded_key(rec.request)
    assert (canon.method, canon.host, canon.path) == ("POST", "", "/v1/chat/completions")


def test_every_llama_stack_fixture_loads():
    kinds = {}
    for path in sorted(FIXTURES.glob("*.json")):
        rec = formats.load(path)
        resp = rec.responses[0]
        kinds[path.name[:12]] = (
            rec.request.method,
            resp.status,
            resp.stream.format if resp.stream else resp.body.kind,
        )
    assert kinds["models-3a641"] == ("GET", 200, "json")
    assert kinds["28a43dc80443"] == ("POST", 400, "json")  # recorded provider error
    assert kinds["04172112ffbb"] == ("POST", 200, "ndjson")  # Ollama /api/generate
    assert kinds["f22657bfd86d"] == ("POST", 200, "sse")  # raw Anthropic SSE lines
