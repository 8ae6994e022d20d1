"""The ``cassette`` content view: judged through mitmproxy's own rendering function
(``contentviews.prettify_message``, as mitmweb and mitmdump call it) on a stream the local
upstream sent and on a cassette file the proxy wrote, and in a real mitmdump printing bodies
(``--set flow_detail=3``)."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
from mitmproxy import contentviews
from mitmproxy.test import taddons, tflow

from proxy_addon.mitm import contentview
from proxy_addon.store.layout import iter_cassette_files
from tests.conftest import FAKE_KEY, openai_client
from tests.upstream import FakeUpstreamServer

CHAT = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


def shown(body: bytes, content_type: str, view: str = "auto") -> contentviews.ContentviewResult:
    """What mitmproxy shows of a response with this body."""
    contentview.register()
    flow = tflow.tflow(resp=True)
    assert flow.response is not None
    flow.response.headers["content-type"] = content_type
    flow.response.content = body
    with taddons.context():
        return contentviews.prettify_message(flow.response, flow, view)


def test_a_stream_shows_as_its_assembled_answer_and_its_events(http_upstream: FakeUpstreamServer):
    answer = httpx.post(
        http_upstream.base_url + "/v1/chat/completions",
        json=CHAT,
        headers={"authorization": f"Bearer {FAKE_KEY}"},
    )
    blocks = [b for b in answer.content.split(b"\n\n") if b.strip()]
    result = shown(answer.content, answer.headers["content-type"])
    assert result.view_name == "cassette", result
    lines = result.text.splitlines()
    assert lines[:2] == ["[assembled answer]", "Answer 1 to: hi"], result.text
    assert f"[{len(blocks)} events, sse]" in lines
    events = lines[lines.index(f"[{len(blocks)} events, sse]") + 1 :]
    assert len(events) == len(blocks) and events[-1].endswith("-: [DONE]")
    # a plain JSON answer is left to mitmproxy's JSON view; asked by name, ours says it cannot
    plain = shown(b'{"choices": []}', "application/json")
    assert plain.view_name == "JSON"
    assert shown(b'{"choices": []}', "application/json", "cassette").syntax_highlight == "error"


def test_a_cassette_file_shows_as_its_recording_and_mitmdump_prints_its_replayed_answer(
    proxies, tmp_path: Path, http_upstream
):
    cassettes = tmp_path / "cassettes"
    recorder = proxies(cassettes, "record")
    list(openai_client(recorder, http_upstream).chat.completions.create(**CHAT))
    recorder.stop()
    [path] = iter_cassette_files(cassettes)
    doc = orjson.loads(path.read_bytes())
    result = shown(path.read_bytes(), "application/json")
    assert result.view_name == "cassette", result
    assert result.text.splitlines()[0] == f"[cassette] POST {doc['request']['url']}"
    events = len(doc["responses"][0]["stream"]["events"])
    assert "[response 1 of 1: 200, recorded " in result.text
    assert f"[assembled answer]\nAnswer 1 to: hi\n\n[{events} events, sse]" in result.text

    proxy = proxies(cassettes, "replay", flow_detail="3")
    chunks = list(openai_client(proxy, http_upstream).chat.completions.create(**CHAT))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "Answer 1 to: hi"
    )
    log = proxy.stop()
    assert "[assembled answer]\n" in log and "Answer 1 to: hi" in log, log[-3000:]
