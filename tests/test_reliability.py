"""Reliability and security under load, faults and hostile input, with real processes.

Each test is bounded to seconds; the long ones are marked ``slow`` but stay in the default run.
"""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from proxy_addon import cassette, sse
from proxy_addon.process import start_proxy
from proxy_addon.store import iter_cassette_files
from tests.conftest import SEED, openai_client, record_prompts
from tests.upstream import read_big_stream

CASSETTE = str(Path(sys.executable).with_name("cassette"))


def _verify(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CASSETTE, "verify", "--dir", str(directory)], capture_output=True,
                          text=True, timeout=60)


# -- load ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_64_concurrent_streams_record_then_replay_exactly(tmp_path, http_upstream, proxies):
    """60 clients with distinct prompts and 4 that each repeat one prompt three times in a row,
    all at once: while recording and again while replaying."""
    http_upstream.state.event_delay = 0.02
    cassettes = tmp_path / "c"

    def wave(proxy) -> dict[int, list[str]]:
        client = openai_client(proxy, http_upstream)
        results: dict[int, list[str]] = {}
        errors: list[BaseException] = []
        start = threading.Barrier(64)

        def run(i: int) -> None:
            try:
                start.wait()
                prompts = [f"distinct {i}"] if i < 60 else [f"repeat {i}"] * 3
                results[i] = ["".join(c.choices[0].delta.content or "" for c in
                                      client.chat.completions.create(
                                          model="gpt-4o", stream=True,
                                          messages=[{"role": "user", "content": p}]))
                              for p in prompts]
            except BaseException as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors[:3]
        return results

    rec = proxies(cassettes, "record")
    recorded = wave(rec)
    assert "64 recorded" not in rec.stop()  # 72 requests: 60 + 4 x 3
    assert recorded[3] == ["Answer 1 to: distinct 3"]
    assert recorded[61] == [f"Answer {n} to: repeat 61" for n in (1, 2, 3)]
    assert len(list(iter_cassette_files(cassettes))) == 64
    hits = http_upstream.state.hits
    replay = proxies(cassettes, "replay")
    replayed = wave(replay)
    assert replayed == recorded
    assert http_upstream.state.hits == hits
    assert "72 hits, 0 recorded, 0 misses, 0 unused" in replay.stop()


@pytest.mark.slow
def test_memory_stays_bounded_recording_a_50_mb_stream(tmp_path, http_upstream, proxies):
    proxy = proxies(tmp_path / "c", "record")
    before = proxy.peak_rss_mb()
    received = read_big_stream(proxy.url, http_upstream.base_url)
    time.sleep(0.5)
    growth = proxy.peak_rss_mb() - before
    proxy.stop()
    assert received > 50 * 1024 * 1024
    # the stream passes through and its events are kept once, as text: well under twice its size
    assert growth < 1.5 * received / 1024 / 1024, f"peak RSS grew {growth} MB"
    [path] = list(iter_cassette_files(tmp_path / "c"))
    rec = cassette.load(path)
    assert rec.responses[0].stream.complete and len(rec.responses[0].stream.events) == 50_001


# -- crashes -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_kill_9_mid_recording_leaves_only_whole_cassettes(tmp_path, http_upstream, confdir):
    http_upstream.state.event_delay = 0.05  # each stream lasts about half a second
    cassettes = tmp_path / "c"
    proxy = start_proxy(cassettes, "record", confdir=confdir)
    client = openai_client(proxy, http_upstream)
    done: list[int] = []

    def run(i: int) -> None:
        try:
            list(client.chat.completions.create(
                model="gpt-4o", stream=True,
                messages=[{"role": "user", "content": f"wave {i} " + "word " * (i % 7)}]))
            done.append(i)
        except Exception:
            pass  # the proxy died under it

    threads = [threading.Thread(target=run, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
        time.sleep(0.02)
    time.sleep(0.3)
    proxy.process.send_signal(signal.SIGKILL)
    for t in threads:
        t.join(30)
    proxy.stop()
    files = list(iter_cassette_files(cassettes))
    assert 0 < len(files) < 30, "the kill should land mid-wave"
    check = _verify(cassettes)
    assert check.returncode == 0, check.stdout
    # what was saved replays exactly
    replay = start_proxy(cassettes, "replay", confdir=confdir)
    try:
        with httpx.Client(proxy=replay.url) as c:
            for path in files:
                rec = cassette.load(path)
                r = c.post(rec.request.url, json=rec.request.body.value)
                events = sse.split("sse", r.content)
                assert [e.data for e in events] == [e.data for e in rec.responses[0].stream.events]
    finally:
        replay.stop()


def test_unwritable_cassette_dir_still_answers_and_names_the_file(tmp_path, http_upstream,
                                                                  proxies):
    cassettes = tmp_path / "c"
    cassettes.mkdir()
    # a file where the recorder needs a directory: writing fails even for root
    (cassettes / f"127.0.0.1_{http_upstream.server_address[1]}").write_text("in the way")
    proxy = proxies(cassettes, "record")
    client = openai_client(proxy, http_upstream)
    got = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert got.choices[0].message.content == "Answer 1 to: x"  # the live answer arrives
    streamed = list(client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "y"}], stream=True))
    assert streamed
    log = proxy.stop()
    assert "could not write the cassette" in log
    assert f"127.0.0.1_{http_upstream.server_address[1]}" in log


def test_full_disk_still_answers_and_logs(tmp_path, http_upstream, proxies):
    mount = tmp_path / "tiny"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                          capture_output=True)
    if made.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here: " + made.stderr.decode().strip())
    try:
        proxy = proxies(mount, "record")
        client = openai_client(proxy, http_upstream)
        big = "word " * 30_000  # the cassette would be ~150 kB, the disk holds 64 kB
        got = client.chat.completions.create(model="gpt-4o",
                                             messages=[{"role": "user", "content": big}])
        assert got.choices[0].message.content.startswith("Answer 1 to: word")
        log = proxy.stop()
        assert "could not write the cassette" in log and "No space left" in log
        assert not list(iter_cassette_files(mount))
        assert not [p for p in mount.rglob("*") if p.is_file()]  # no temp file left behind
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


# -- faults ----------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_upstream_faults_reach_the_client_and_the_proxy_keeps_serving(tmp_path, http_upstream,
                                                                      proxies):
    cassettes = tmp_path / "c"
    proxy = proxies(cassettes, "record")
    with httpx.Client(proxy=proxy.url, timeout=2) as client:
        # refused: the proxy answers 502 with mitmproxy's reason (the connection error a
        # direct client would get, as HTTP)
        r = client.post(f"http://127.0.0.1:{_closed_port()}/v1/chat/completions", json={})
        assert r.status_code == 502 and "errno 111" in r.text.lower()  # ECONNREFUSED
        # time-out: the client's own timeout fires
        with pytest.raises(httpx.ReadTimeout):
            client.post(http_upstream.base_url + "/v1/chat/completions",
                        json={"model": "hang", "messages": [{"role": "user", "content": "z"}]})
        # malformed SSE passes through byte for byte
        r = client.post(http_upstream.base_url + "/v1/chat/completions",
                        json={"model": "malformed", "stream": True, "messages": []})
        assert r.content == b"data: {not json\n\nevent\x00: ???\ndata: [DONE]\n\n"
        # and it still serves
        ok = client.post(http_upstream.base_url + "/v1/chat/completions",
                         json={"model": "gpt-4o", "messages": [{"role": "user", "content": "ok"}]})
        assert ok.json()["choices"][0]["message"]["content"] == "Answer 1 to: ok"
    proxy.stop()
    saved = {cassette.load(p).request.body.value.get("model"): cassette.load(p)
             for p in iter_cassette_files(cassettes)}
    assert set(saved) == {"malformed", "gpt-4o"}  # nothing for the refused or the hung request
    assert saved["malformed"].responses[0].stream.events[0].data == "{not json"


def test_client_disconnect_mid_stream_leaves_no_complete_looking_cassette(tmp_path, http_upstream,
                                                                          proxies):
    http_upstream.state.event_delay = 0.2
    proxy = proxies(tmp_path / "c", "record")
    stream = openai_client(proxy, http_upstream).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "a b c d e f g"}], stream=True)
    next(iter(stream))
    stream.close()  # the client gives up after the first event
    time.sleep(2.5)  # the upstream finishes its side meanwhile
    log = proxy.stop()
    for path in iter_cassette_files(tmp_path / "c"):
        for resp in cassette.load(path).responses:
            assert resp.stream is None or not resp.stream.complete
    assert "not saving" in log or not list(iter_cassette_files(tmp_path / "c"))


# -- bad cassettes --------------------------------------------------------------------------------


def test_bad_cassettes_are_skipped_by_name_and_explained_on_a_miss(tmp_path, confdir):
    d = tmp_path / "c"
    d.mkdir()
    shutil.copy(SEED, d / "good.json")
    good = orjson.loads(SEED.read_bytes())
    (d / "truncated.json").write_bytes(SEED.read_bytes()[:500])
    ours = orjson.loads(cassette.dumps(cassette.load(SEED)))
    ours["request"]["body"]["messages"][0]["content"] = "wrong types"
    ours["responses"][0]["status"] = "two hundred"
    (d / "wrong-types.json").write_bytes(orjson.dumps(ours))
    (d / "future.json").write_bytes(orjson.dumps(dict(ours, version=99)))
    (d / "package.json").write_bytes(b'{"name": "not ours", "version": "1.0.0"}')
    (d / "huge.json").write_bytes(b"[" + b"0," * 1_200_000 + b"0]")
    assert good  # the seed itself stays readable
    proxy = start_proxy(d, "replay", confdir=confdir, options={"cassette_max_file_mb": "1"})
    try:
        client = openai.OpenAI(api_key="sk-test-bad", max_retries=0,
                               http_client=openai.DefaultHttpxClient(
                                   proxy=proxy.url,
                                   verify=ssl.create_default_context(cafile=str(proxy.ca_cert))))
        chunks = list(client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Tell me a joke"}], stream=True))
        assert len(chunks) == 17  # the good file is served
        with pytest.raises(openai.NotFoundError) as err:
            client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "wrong types"}], stream=True)
        assert "wrong-types.json" in err.value.message and "responses[0].status" in err.value.message
    finally:
        log = proxy.stop()
    for name, reason in [("truncated.json", "not valid JSON"), ("wrong-types.json", "status"),
                         ("future.json", "newer than this tool reads"), ("package.json", "version"),
                         ("huge.json", "too large")]:
        assert f"{d / name}: {reason}" in log or (name in log and reason in log), name


# -- hostile input --------------------------------------------------------------------------------


def test_hostile_requests_are_recorded_safely_and_the_proxy_keeps_serving(tmp_path, http_upstream,
                                                                         proxies):
    cassettes = tmp_path / "c"
    proxy = proxies(cassettes, "record")
    url = http_upstream.base_url + "/v1/chat/completions"
    with httpx.Client(proxy=proxy.url, timeout=10) as client:
        hostile = [
            dict(content=b"\xff\xfe\x00 not json \xc3\x28", headers={"content-type": "application/json"}),
            dict(content=b"[" * 100_000 + b"]" * 100_000, headers={"content-type": "application/json"}),
            # parses, but is deeper than orjson writes: kept as text
            dict(content=b'{"a":' * 300 + b"1" + b"}" * 300, headers={"content-type": "application/json"}),
            dict(content=b"plain text body", headers={"x-long": "a" * 60_000}),
            dict(content=b"{}", headers={"x-cassette-test-id": "../../../etc/passwd\x7f"}),
        ]
        for kwargs in hostile:
            client.post(url, **kwargs)  # the upstream may answer anything; the proxy must live
        for path in ["/v1/../../../../etc/x", "/%2e%2e/%2e%2e/abs", "/v1/a%00b"]:
            client.post(http_upstream.base_url + path, json={"model": "m"})
        ok = client.post(url, json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
        assert ok.status_code == 200
    log = proxy.stop()
    assert "could not" not in log  # every one of them was recorded
    root = cassettes.resolve()
    for p in tmp_path.rglob("*"):
        if p.is_file():
            assert p.resolve().is_relative_to(root), p
    assert _verify(cassettes).returncode == 0


# -- secrets and egress -----------------------------------------------------------------------------


def test_a_key_in_every_place_never_reaches_disk(tmp_path, upstream, proxies):
    key = "sk-test-everywhere-7e1f0c"
    cassettes = tmp_path / "c"
    proxy = proxies(cassettes, "record")
    with httpx.Client(proxy=proxy.url, timeout=10,
                      verify=ssl.create_default_context(cafile=str(proxy.ca_cert))) as client:
        base = upstream.base_url
        client.post(base + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                    json={"model": "gpt-4o", "messages": [{"role": "user", "content": "1"}]})
        client.post(base + "/v1/chat/completions", headers={"api-key": key},
                    json={"model": "gpt-4o", "messages": [{"role": "user", "content": "2"}]})
        client.post(base + "/v1/messages", headers={"x-api-key": key},
                    json={"model": "claude", "max_tokens": 5,
                          "messages": [{"role": "user", "content": "3"}]})
        gemini = base + "/v1beta/models/g:generateContent"
        client.post(gemini, headers={"x-goog-api-key": key},
                    json={"contents": [{"parts": [{"text": "4"}]}]})
        client.post(gemini + f"?key={key}", json={"contents": [{"parts": [{"text": "5"}]}]})
        client.post(base + "/v1/chat/completions", data={"api_key": key, "q": "6"})
        client.post(base + "/v1/files", data={"api_key": key, "purpose": "x"},
                    files={"file": ("f.txt", b"data", "text/plain")})
    log = proxy.stop()
    assert "7 recorded" in log
    for p in tmp_path.rglob("*"):
        if p.is_file() and p.resolve().is_relative_to(cassettes.resolve()):
            assert key.encode() not in p.read_bytes(), p
    assert _verify(cassettes).returncode == 0


def test_replay_makes_no_upstream_connection_for_hits_or_misses(tmp_path, http_upstream, proxies):
    cassettes = tmp_path / "c"
    record_prompts(proxies, cassettes, http_upstream, "hit")
    before = http_upstream.state.connections
    replay = proxies(cassettes, "replay")
    client = openai_client(replay, http_upstream)
    for _ in range(3):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hit"}])
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="gpt-4o",
                                           messages=[{"role": "user", "content": "miss"}])
    with pytest.raises(openai.NotFoundError):
        list(client.chat.completions.create(model="gpt-4o", stream=True,
                                            messages=[{"role": "user", "content": "miss"}]))
    replay.stop()
    assert http_upstream.state.connections == before
