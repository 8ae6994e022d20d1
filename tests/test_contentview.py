"""The ``cassette`` content view: judged through mitmproxy's own rendering function
(``contentviews.prettify_message``, as mitmweb and mitmdump call it) on a stream the local
upstream sent and on a cassette file the proxy wrote, and in a real mitmdump printing bodies
(``--set flow_detail=3``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import openai
import orjson
import pytest
from mitmproxy import contentviews
from mitmproxy.test import taddons, tflow

from proxy_addon.mitm import contentview
from proxy_addon.runner.process import ADDON_SCRIPT, free_ports, start_proxy
from proxy_addon.store.layout import iter_cassette_files
from tests.conftest import FAKE_KEY, openai_client, sdk_http_client
from tests.test_reports import chromium
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


@pytest.fixture(scope="module")
def streamed(tmp_path_factory: pytest.TempPathFactory, confdir: Path) -> tuple[Path, str]:
    """A directory with one recorded stream (the local upstream's answer to CHAT), and the
    upstream's base URL (stopped: replays never reach it)."""
    cassettes = tmp_path_factory.mktemp("streamed") / "cassettes"
    upstream = FakeUpstreamServer().start()
    try:
        recorder = start_proxy(
            cassettes, "record", confdir=confdir, options={"ssl_insecure": "true"}
        )
        list(openai_client(recorder, upstream).chat.completions.create(**CHAT))
        recorder.stop()
    finally:
        upstream.stop()
    return cassettes, upstream.base_url


def test_a_cassette_file_shows_as_its_recording(streamed: tuple[Path, str]):
    [path] = iter_cassette_files(streamed[0])
    doc = orjson.loads(path.read_bytes())
    result = shown(path.read_bytes(), "application/json")
    assert result.view_name == "cassette", result
    assert result.text.splitlines()[0] == f"[cassette] POST {doc['request']['url']}"
    events = len(doc["responses"][0]["stream"]["events"])
    assert "[response 1 of 1: 200, recorded " in result.text
    assert f"[assembled answer]\nAnswer 1 to: hi\n\n[{events} events, sse]" in result.text


def test_mitmdump_prints_a_replayed_stream_as_its_answer(proxies, streamed: tuple[Path, str]):
    cassettes, base_url = streamed
    proxy = proxies(cassettes, "replay", flow_detail="3")
    client = openai.OpenAI(
        api_key=FAKE_KEY,
        base_url=base_url + "/v1",
        max_retries=0,
        http_client=sdk_http_client(proxy),
    )
    chunks = list(client.chat.completions.create(**CHAT))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "Answer 1 to: hi"
    )
    log = proxy.stop()
    assert "[assembled answer]\n" in log and "Answer 1 to: hi" in log, log[-3000:]


@pytest.mark.slow
def test_mitmweb_shows_a_replayed_stream_as_its_answer_in_chromium(
    streamed: tuple[Path, str], confdir: Path, tmp_path: Path
):
    """mitmweb, headless, with the addon: its content API picks the view for the flow on its
    own, and the page Chromium renders for the flow's response shows the assembled answer."""
    cassettes, base_url = streamed
    web, port = free_ports(2)
    mitmweb = Path(sys.executable).with_name("mitmweb")
    # fmt: off
    proc = subprocess.Popen(
        [str(mitmweb), "-s", str(ADDON_SCRIPT), "--no-web-open-browser",
         "--web-host", "127.0.0.1", "--web-port", str(web), "--listen-host", "127.0.0.1",
         "-p", str(port), "--set", f"confdir={confdir}", "--set", f"cassette_dir={cassettes}",
         "--set", "cassette_mode=replay", "--set", "web_password=s3cret-test"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    # fmt: on
    try:
        assert proc.stdout is not None
        log = []
        for line in proc.stdout:  # until it says it listens (or ends: then the loop ends)
            log.append(line)
            if "Web server listening" in line:
                break
        assert "Web server listening" in log[-1], "".join(log)
        with httpx.Client(
            proxy=f"http://127.0.0.1:{port}", verify=str(confdir / "mitmproxy-ca-cert.pem")
        ) as client:
            answer = client.post(
                base_url + "/v1/chat/completions",
                json=CHAT,
                headers={"authorization": f"Bearer {FAKE_KEY}"},
            )
        assert answer.status_code == 200 and b"[DONE]" in answer.content
        api = f"http://127.0.0.1:{web}"
        [flow] = httpx.get(f"{api}/flows?token=s3cret-test").json()
        content = httpx.get(
            f"{api}/flows/{flow['id']}/response/content/auto.json?token=s3cret-test"
        ).json()
        assert content["view_name"] == "cassette"
        assert content["text"].startswith("[assembled answer]\nAnswer 1 to: hi\n"), content
        page = f"{api}/?token=s3cret-test#/flows/{flow['id']}/response"
        dom = chromium("--dump-dom", "--virtual-time-budget=5000", page).stdout
        # each line of the view is a <div> of the response's <pre>
        assert "<pre><div>[assembled answer]</div><div>Answer 1 to: hi</div>" in dom, dom[-2000:]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
