"""Reliability and security under load, faults and hostile input, with real processes.

Each test is bounded to seconds; the long ones are marked ``slow`` but stay in the default run.
"""

from __future__ import annotations

import contextlib
import json
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from proxy_addon import formats
from proxy_addon.bodies import sse
from proxy_addon.formats import cassette
from proxy_addon.runner.process import start_proxy
from proxy_addon.store.layout import iter_cassette_files
from tests.conftest import (
    CASSETTE,
    SEED,
    TEST_ADDONS,
    counted,
    gzip_bomb,
    openai_client,
    record_prompts,
    wait_until,
)
from tests.upstream import read_big_stream


def _verify(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CASSETTE, "verify", "--dir", str(directory)], capture_output=True, text=True, timeout=60
    )


# -- load ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_72_concurrent_streams_record_then_replay_exactly(tmp_path, http_upstream, proxies):
    """72 streamed requests at once, recorded and then replayed: 60 distinct prompts, and 4
    prompts each sent by 3 clients at the same moment (so identical requests are in flight
    together). Nothing is lost, duplicated or mixed up."""
    http_upstream.state.event_delay = 0.02
    cassettes = tmp_path / "c"
    prompts = [f"distinct {i}" for i in range(60)] + [f"repeat {i % 4}" for i in range(12)]

    def wave(proxy) -> list[str]:
        client = openai_client(proxy, http_upstream)
        results: list[str] = [""] * len(prompts)
        errors: list[BaseException] = []
        start = threading.Barrier(len(prompts))

        def run(i: int) -> None:
            try:
                start.wait()
                results[i] = "".join(
                    c.choices[0].delta.content or ""
                    for c in client.chat.completions.create(
                        model="gpt-4o",
                        stream=True,
                        messages=[{"role": "user", "content": prompts[i]}],
                    )
                )
            except BaseException as e:  # noqa: BLE001 - any failure of a thread is reported below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors[:3]
        return results

    rec = proxies(cassettes, "record")
    recorded = wave(rec)
    assert "cassette summary: 72 recorded" in rec.stop()
    assert recorded[3] == "Answer 1 to: distinct 3"
    for k in range(4):  # each repeated prompt got the upstream's answers 1, 2 and 3
        got = sorted(r for r, p in zip(recorded, prompts) if p == f"repeat {k}")
        assert got == [f"Answer {n} to: repeat {k}" for n in (1, 2, 3)]
    files = list(iter_cassette_files(cassettes))
    assert len(files) == 64
    assert sorted(len(formats.load(f).responses) for f in files) == [1] * 60 + [3] * 4
    hits = http_upstream.state.hits
    replay = proxies(cassettes, "replay")
    replayed = wave(replay)
    assert replayed[:60] == recorded[:60]
    for k in range(4):  # in flight together, they share out the three recorded answers
        assert sorted(r for r, p in zip(replayed, prompts) if p == f"repeat {k}") == sorted(
            r for r, p in zip(recorded, prompts) if p == f"repeat {k}"
        )
    assert http_upstream.state.hits == hits
    assert "cassette summary: 72 hits, 0 misses, 0 unused" in replay.stop()


def test_identical_requests_in_flight_together_keep_their_order(tmp_path, http_upstream, proxies):
    """Three identical requests sent 0.15 s apart, all in flight at once, the first answered
    last (the upstream delays it most): the cassette holds the answers in the order the
    requests were made, and a replay gives them out in that order."""
    cassettes = tmp_path / "c"
    delays = ["0.9", "0.6", "0.3"]  # the first request is answered last

    def send_staggered(proxy, arrived) -> list[str]:
        """Each request sent once the one before it has arrived where it is answered."""
        client = openai_client(proxy, http_upstream)
        out: list[str] = [""] * 3

        def run(i: int) -> None:
            out[i] = (
                client.chat.completions.create(
                    model="gpt-4o",
                    messages=[{"role": "user", "content": "same"}],
                    extra_headers={"x-fake-delay": delays[i], "x-fake-tag": f"client {i}"},
                )
                .choices[0]
                .message.content
            )

        threads = []
        for i in range(3):
            threads.append(threading.Thread(target=run, args=(i,)))
            threads[-1].start()
            wait_until(lambda: arrived(i, out), f"request {i} to arrive")  # noqa: B023
        for t in threads:
            t.join(20)
        return out

    rec = proxies(cassettes, "record")
    # recording: each arrives at the upstream, which answers the first one last
    recorded = send_staggered(rec, lambda i, out: len(http_upstream.state.seen) > i)
    assert "cassette summary: 3 recorded" in rec.stop()
    assert recorded == [f"Answer {n} to: same [client {n - 1}]" for n in (1, 2, 3)]
    [path] = list(iter_cassette_files(cassettes))
    on_disk = [
        r.body.value["choices"][0]["message"]["content"] for r in formats.load(path).responses
    ]
    assert on_disk == recorded  # request order, not the order the answers finished in
    replay = proxies(cassettes, "replay")
    # replaying: answered at once, in the order sent
    assert send_staggered(replay, lambda i, out: out[i] != "") == recorded
    again = openai_client(replay, http_upstream).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "same"}]
    )
    assert again.choices[0].message.content == recorded[-1]  # past the end, the last repeats
    assert "4 hits, 0 misses" in replay.stop()


@pytest.mark.slow
def test_memory_stays_bounded_recording_a_50_mb_stream(tmp_path, http_upstream, proxies):
    proxy = proxies(tmp_path / "c", "record")
    before = proxy.peak_rss_mb()
    received = read_big_stream(proxy.url, http_upstream.base_url)
    wait_until(lambda: "cassette: recorded" in proxy.log, "the 50 MB cassette written")
    growth = proxy.peak_rss_mb() - before
    proxy.stop()
    assert received > 50 * 1024 * 1024
    # the stream passes through and its events are kept once, as text: well under twice its size
    assert growth < 1.5 * received / 1024 / 1024, f"peak RSS grew {growth} MB"
    [path] = list(iter_cassette_files(tmp_path / "c"))
    rec = formats.load(path)
    assert rec.responses[0].stream.complete and len(rec.responses[0].stream.events) == 50_001


@pytest.mark.slow
def test_recordings_over_8_mb_are_read_back_from_disk(tmp_path, http_upstream, proxies):
    """A 10 MB stream recorded twice in one session (the second rewrite reads the first back
    from the file), then replayed: the proxy serves it from the file, not from memory, so a
    change to the file while it runs is what the next client gets."""
    cassettes = tmp_path / "c"
    proxy = proxies(cassettes, "record")
    sizes = [read_big_stream(proxy.url, http_upstream.base_url, events=10_000) for _ in range(2)]
    assert "cassette summary: 2 recorded" in proxy.stop()
    [path] = list(iter_cassette_files(cassettes))
    assert path.stat().st_size > 8 * 1024 * 1024
    rec = formats.load(path)
    assert [len(r.stream.events) for r in rec.responses] == [10_001, 10_001]
    assert all(r.stream.complete for r in rec.responses)

    replay = proxies(cassettes, "replay")
    with httpx.Client(proxy=replay.url, timeout=60) as client:

        def ask() -> list:
            r = client.post(rec.request.url, json=rec.request.body.value)
            return [e.data for e in sse.split("sse", r.content)]

        first = ask()
        assert first == [e.data for e in rec.responses[0].stream.events]
        assert (
            len(b"".join(sse.frame_event("sse", e) for e in rec.responses[0].stream.events))
            == sizes[0]
        )
        rec.responses[1].stream.events[0].data["choices"][0]["delta"]["content"] = "changed"
        path.write_bytes(cassette.dumps(rec))  # under the running proxy
        second = ask()
    assert second[0]["choices"][0]["delta"]["content"] == "changed"
    assert "2 hits" in replay.stop()


@pytest.mark.slow
def test_replayed_recordings_are_kept_within_the_cache_budget(tmp_path, proxies):
    """30 recorded streams of 0.5 MB each (2,000 events) replayed one after the other with
    ``cassette_cache_mb=2``: the least recently used are evicted (the first is read from its
    file again when asked again, the last one is not: every file the proxy opens is seen by an
    audit hook, tests/addons/write_audit.py), and the proxy's resident memory stays within
    the budget's reach instead of growing with every file replayed."""
    cassettes = tmp_path / "c"
    cassettes.mkdir()
    url = "https://api.openai.com/v1/chat/completions"
    files = []
    for n in range(30):
        events = [
            {"t": 0.0, "data": {"choices": [{"delta": {"content": f"{n}-{i} word"}}]}}
            for i in range(2000)
        ] + [{"t": 0.0, "data": "[DONE]"}]
        doc = {
            "format": "llm-cassette",
            "version": 1,
            "request": {
                "method": "POST",
                "url": url,
                "headers": {"content-type": "application/json"},
                "body": {
                    "model": "gpt-4o",
                    "stream": True,
                    "messages": [{"role": "user", "content": f"stream {n}"}],
                },
            },
            "responses": [
                {
                    "status": 200,
                    "headers": [["content-type", "text/event-stream"]],
                    "stream": {"format": "sse", "complete": True, "events": events},
                }
            ],
        }
        files.append(cassettes / f"stream-{n}.json")
        files[-1].write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    assert all(400_000 < f.stat().st_size < 600_000 for f in files)
    audit = tmp_path / "opens.log"
    proxy = proxies(
        cassettes,
        "replay",
        extra_scripts=(TEST_ADDONS / "write_audit.py",),
        write_audit_log=str(audit),
        write_audit_reads="true",
        cassette_cache_mb="2",
    )

    def rss_mb() -> float:
        status = Path(f"/proc/{proxy.process.pid}/status").read_text()
        return int(status.split("VmRSS:")[1].split()[0]) / 1024

    context = ssl.create_default_context(cafile=str(proxy.ca_cert))
    with httpx.Client(proxy=proxy.url, timeout=60, verify=context) as client:

        def ask(n: int) -> None:
            body = {
                "model": "gpt-4o",
                "stream": True,
                "messages": [{"role": "user", "content": f"stream {n}"}],
            }
            r = client.post(url, json=body)
            assert r.status_code == 200 and f"{n}-1999 word".encode() in r.content

        ask(0)
        before = rss_mb()
        for n in range(1, 30):
            ask(n)
        grown = rss_mb() - before
        ask(0)  # evicted long ago: read again
        ask(29)  # the most recent: still kept
    log = proxy.stop()
    assert counted(log, "hits", "misses") == (32, 0)
    reads = [
        line.split(" ", 1)[1]
        for line in audit.read_text().splitlines()
        if line.startswith("read ") and line.endswith(".json")
    ]
    # (the hook is installed after start-up has read each file's head)
    assert reads.count(str(files[0])) == 2  # evicted, then read again
    assert [reads.count(str(f)) for f in files[1:]] == [1] * 29  # the last one still kept
    # 29 streams of 0.5 MB parsed: far more than 100 MB if each were kept
    assert grown < 60, f"resident memory grew {grown:.0f} MB replaying 14.5 MB of files"


# -- crashes -------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("point", ["mid-bytes", "before-fsync", "before-rename"])
def test_a_kill_while_a_cassette_is_rewritten_leaves_the_old_file_whole(
    point, tmp_path, http_upstream, confdir
):
    """SIGKILL in the middle of rewriting a cassette (tests/addons/kill_write.py kills the
    proxy at a chosen point of its 2nd cassette write: half the bytes written, all written but
    not fsynced, fsynced but not renamed): the file where the cassette goes is the old one,
    whole, byte for byte, as read with plain json; what the kill left behind is not a cassette
    to the store, which replays the old recording."""
    cassettes = tmp_path / "c"
    proxy = start_proxy(
        cassettes,
        "record",
        confdir=confdir,
        extra_scripts=(TEST_ADDONS / "kill_write.py",),
        options={"kill_write": f"{point}:2"},
    )
    client = openai_client(proxy, http_upstream)
    ask = {"model": "gpt-4o", "messages": [{"role": "user", "content": "twice"}]}
    first = client.chat.completions.create(**ask).choices[0].message.content
    wait_until(lambda: "cassette: recorded" in proxy.log, "the first cassette write")
    [path] = [p for p in cassettes.rglob("*.json") if not p.name.startswith(".")]
    old = path.read_bytes()
    assert len(json.loads(old)["responses"]) == 1
    # the same request again: its cassette is rewritten with both responses, and the proxy
    # dies in the middle (the writer thread may get there before the answer leaves)
    with contextlib.suppress(openai.APIConnectionError):
        client.chat.completions.create(**ask)
    assert proxy.process.wait(30) == -signal.SIGKILL, proxy.log
    proxy.stop()
    cassette_names = [p for p in cassettes.rglob("*.json") if not p.name.startswith(".")]
    assert cassette_names == [path]
    assert path.read_bytes() == old  # the old file, whole
    replay = start_proxy(cassettes, "replay", confdir=confdir)
    try:
        again = openai_client(replay, http_upstream).chat.completions.create(**ask)
        assert again.choices[0].message.content == first
    finally:
        log = replay.stop()
    assert counted(log, "hits", "misses", "recordings") == (1, 0, 1)


def test_unwritable_cassette_dir_still_answers_and_names_the_file(tmp_path, http_upstream, proxies):
    cassettes = tmp_path / "c"
    cassettes.mkdir()
    # a file where the recorder needs a directory: writing fails even for root
    (cassettes / f"127.0.0.1_{http_upstream.server_address[1]}").write_text("in the way")
    proxy = proxies(cassettes, "record")
    client = openai_client(proxy, http_upstream)
    got = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}]
    )
    assert got.choices[0].message.content == "Answer 1 to: x"  # the live answer arrives
    streamed = list(
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "y"}], stream=True
        )
    )
    assert streamed
    log = proxy.stop()
    assert "could not write the cassette" in log
    assert f"127.0.0.1_{http_upstream.server_address[1]}" in log


def test_a_failing_write_still_answers_and_logs(tmp_path, http_upstream, proxies):
    """Every write of the proxy process past 64 kB fails (RLIMIT_FSIZE: EFBIG, as a full disk
    fails with ENOSPC; no root needed): the client still gets its live answer, the error
    names the file, and no temp file is left behind."""
    cassettes = tmp_path / "c"
    proxy = proxies(cassettes, "record")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.prlimit(proxy.process.pid, resource.RLIMIT_FSIZE, (64 * 1024, hard))
    client = openai_client(proxy, http_upstream)
    big = "word " * 30_000  # the cassette would be ~150 kB
    got = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": big}]
    )
    assert got.choices[0].message.content.startswith("Answer 1 to: word")
    small = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "small"}]
    )
    assert small.choices[0].message.content == "Answer 1 to: small"
    log = proxy.stop()
    assert "could not write the cassette" in log and "File too large" in log
    assert counted(log, "hits", "recorded", "misses", "write_errors") == (0, 1, 0, 1)
    [saved] = list(iter_cassette_files(cassettes))  # the small one fits
    assert formats.load(saved).request.body.value["messages"][0]["content"] == "small"
    assert [p for p in cassettes.rglob("*") if p.is_file()] == [saved]  # no temp file left


# -- faults ----------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_upstream_faults_reach_the_client_and_the_proxy_keeps_serving(
    tmp_path, http_upstream, proxies
):
    cassettes = tmp_path / "c"
    proxy = proxies(cassettes, "record")
    with httpx.Client(proxy=proxy.url, timeout=2) as client:
        # refused: the proxy answers 502 with mitmproxy's reason (the connection error a
        # direct client would get, as HTTP)
        r = client.post(f"http://127.0.0.1:{_closed_port()}/v1/chat/completions", json={})
        assert r.status_code == 502 and "errno 111" in r.text.lower()  # ECONNREFUSED
        # time-out: the client's own timeout fires
        with pytest.raises(httpx.ReadTimeout):
            client.post(
                http_upstream.base_url + "/v1/chat/completions",
                json={"model": "hang", "messages": [{"role": "user", "content": "z"}]},
            )
        # reset before any byte of the answer: mitmproxy's 502 says the server closed it
        r = client.post(
            http_upstream.base_url + "/v1/chat/completions", json={"model": "reset", "messages": []}
        )
        assert r.status_code == 502 and "server closed connection" in r.text, r.text
        # reset in the middle of a stream: the client sees the stream break
        with (
            pytest.raises(httpx.RemoteProtocolError),
            client.stream(
                "POST",
                http_upstream.base_url + "/v1/chat/completions",
                json={
                    "model": "reset-mid-stream",
                    "stream": True,
                    "messages": [{"role": "user", "content": "r"}],
                },
            ) as r,
        ):
            list(r.iter_bytes())
        # malformed SSE passes through byte for byte
        r = client.post(
            http_upstream.base_url + "/v1/chat/completions",
            json={"model": "malformed", "stream": True, "messages": []},
        )
        assert r.content == b"data: {not json\n\nevent\x00: ???\ndata: [DONE]\n\n"
        # and it still serves
        ok = client.post(
            http_upstream.base_url + "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "ok"}]},
        )
        assert ok.json()["choices"][0]["message"]["content"] == "Answer 1 to: ok"
    log = proxy.stop()
    # refused and reset-before-answering: the upstream's doing; the time-out: the client left
    assert counted(log, "upstream_failed", "abandoned") == (2, 1)
    saved = {
        formats.load(p).request.body.value.get("model"): formats.load(p)
        for p in iter_cassette_files(cassettes)
    }
    # nothing for the refused, the hung and the reset-before-answering requests
    assert set(saved) == {"malformed", "gpt-4o", "reset-mid-stream"}
    assert saved["malformed"].responses[0].stream.events[0].data == "{not json"
    cut = saved["reset-mid-stream"].responses[0].stream  # what arrived, marked as cut
    assert not cut.complete and len(cut.events) == 3


def test_client_disconnect_mid_stream_leaves_no_complete_looking_cassette(
    tmp_path, http_upstream, proxies
):
    http_upstream.state.event_delay = 0.2
    proxy = proxies(tmp_path / "c", "record")
    stream = openai_client(proxy, http_upstream).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "a b c d e f g"}], stream=True
    )
    next(iter(stream))
    stream.close()  # the client gives up after the first event
    wait_until(lambda: "not saving" in proxy.log, "the proxy to see the client leave")
    log = proxy.stop()
    assert not list(iter_cassette_files(tmp_path / "c"))  # an abandoned stream is not saved
    assert "not saving" in log and counted(log, "recorded", "abandoned") == (0, 1)


# -- bad cassettes --------------------------------------------------------------------------------


def test_bad_cassettes_are_skipped_by_name_and_explained_on_a_miss(tmp_path, confdir):
    """Each unreadable file is skipped with one warning naming it and why, and the proxy
    serves the others. A file whose request reads but whose responses do not, written
    pretty-printed as the recorder writes, is read whole only when first used: it is skipped
    then (not at start-up), and the request it would have answered is a miss naming it."""
    d = tmp_path / "c"
    d.mkdir()
    shutil.copy(SEED, d / "good.json")
    (d / "truncated.json").write_bytes(SEED.read_bytes()[:500])
    ours = orjson.loads(cassette.dumps(formats.load(SEED)))
    ours["request"]["body"]["messages"][0]["content"] = "wrong types"
    ours["responses"][0]["status"] = "two hundred"
    (d / "wrong-types.json").write_bytes(orjson.dumps(ours, option=orjson.OPT_INDENT_2))
    (d / "future.json").write_bytes(orjson.dumps(dict(ours, version=99)))
    (d / "package.json").write_bytes(b'{"name": "not ours", "version": "1.0.0"}')
    (d / "huge.json").write_bytes(b"[" + b"0," * 1_200_000 + b"0]")
    summary_file = tmp_path / "summary.json"
    proxy = start_proxy(
        d,
        "replay",
        confdir=confdir,
        options={"cassette_max_file_mb": "1", "cassette_summary": str(summary_file)},
    )
    at_start = proxy.log
    reason = "responses[0].status must be an HTTP status code"
    try:
        client = openai.OpenAI(
            api_key="sk-test-bad",
            max_retries=0,
            http_client=openai.DefaultHttpxClient(
                proxy=proxy.url, verify=ssl.create_default_context(cafile=str(proxy.ca_cert))
            ),
        )
        chunks = list(
            client.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "Tell me a joke"}],
                stream=True,
            )
        )
        assert len(chunks) == 17  # the good file is served
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "wrong types"}], stream=True
            )
        assert f"{d / 'wrong-types.json'} ({reason}). Record it" in err.value.message, (
            err.value.message
        )
    finally:
        log = proxy.stop()
    assert "wrong-types.json" not in at_start  # its request read, its responses not yet
    skipped = [line.partition("] ")[2] for line in log.splitlines() if "cassette: skipping" in line]
    expected = [
        f"cassette: skipping {d / 'truncated.json'}: not valid JSON (unexpected end of data: "
        "line 1 column 501 (char 500))",
        f"cassette: skipping {d / 'future.json'}: format version 99 is newer than this tool "
        "reads (3); upgrade",
        f"cassette: skipping {d / 'package.json'}: missing or non-integer 'version'",
        f"cassette: skipping {d / 'huge.json'}: too large (2.3 MB, the limit is 1 MB: "
        "cassette_max_file_mb)",
        f"cassette: skipping {d / 'wrong-types.json'}: {reason}",
    ]
    assert sorted(skipped) == sorted(expected), "\n".join(skipped)
    bad = {
        Path(b["path"]).name: b["reason"] for b in json.loads(summary_file.read_text())["bad_files"]
    }
    assert set(bad) == {
        "truncated.json",
        "future.json",
        "package.json",
        "huge.json",
        "wrong-types.json",
    }


# -- hostile input --------------------------------------------------------------------------------


def test_hostile_requests_are_recorded_safely_and_the_proxy_keeps_serving(
    tmp_path, http_upstream, proxies
):
    """Bodies that are not JSON or not UTF-8, 100,000-deep JSON, a 60 kB header, a gzip bomb,
    ``../`` in paths, test ids and model names, NUL in a path: each is recorded (counted), the
    bomb is not expanded past the request cap (64 MB; it would make 2 GB), and every file the
    proxy process wrote, renamed or created anywhere on the machine (seen by a Python audit
    hook in the proxy, tests/addons/write_audit.py) is inside the cassette directory."""
    cassettes = tmp_path / "c"
    audit = tmp_path / "writes.log"
    proxy = proxies(
        cassettes,
        "record",
        extra_scripts=(TEST_ADDONS / "write_audit.py",),
        write_audit_log=str(audit),
    )
    url = http_upstream.base_url + "/v1/chat/completions"
    before = proxy.peak_rss_mb()
    with httpx.Client(proxy=proxy.url, timeout=10) as client:
        hostile = [
            dict(
                content=gzip_bomb(2),
                headers={"content-type": "application/json", "content-encoding": "gzip"},
            ),
            dict(
                content=b"\xff\xfe\x00 not json \xc3\x28",
                headers={"content-type": "application/json"},
            ),
            dict(
                content=b"[" * 100_000 + b"]" * 100_000,
                headers={"content-type": "application/json"},
            ),
            # parses, but is deeper than orjson writes: kept as text
            dict(
                content=b'{"a":' * 300 + b"1" + b"}" * 300,
                headers={"content-type": "application/json"},
            ),
            dict(content=b"plain text body", headers={"x-long": "a" * 60_000}),
            dict(content=b"{}", headers={"x-cassette-test-id": "../../../etc/passwd\x7f"}),
        ]
        for kwargs in hostile:
            client.post(url, **kwargs)  # the upstream may answer anything; the proxy must live
        for path in ["/v1/../../../../etc/x", "/%2e%2e/%2e%2e/abs", "/v1/a%00b"]:
            client.post(http_upstream.base_url + path, json={"model": "m"})
        # the model names the file: a model that climbs out of the directory
        client.post(url, json={"model": "../../../../../../../../tmp/escaped", "messages": []})
        ok = client.post(
            url, json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        )
        assert ok.status_code == 200
    growth = proxy.peak_rss_mb() - before
    log = proxy.stop()
    assert counted(log, "hits", "recorded", "misses", "write_errors") == (0, 11, 0, 0)
    assert len(list(iter_cassette_files(cassettes))) == 11
    assert growth < 400, f"peak RSS grew {growth} MB: the bomb was expanded"
    root = cassettes.resolve()
    writes = [line.split(" ", 1) for line in audit.read_text().splitlines()]
    assert writes, "the audit hook saw no write at all"
    outside = [
        (event, path) for event, path in writes if not Path(path).resolve().is_relative_to(root)
    ]
    assert not outside, outside
    assert _verify(cassettes).returncode == 0


# -- egress ------------------------------------------------------------------------------------


def test_replay_makes_no_upstream_connection_for_hits_or_misses(tmp_path, http_upstream, proxies):
    cassettes = tmp_path / "c"
    record_prompts(proxies, cassettes, http_upstream, "hit")
    before = http_upstream.state.connections
    replay = proxies(cassettes, "replay")
    client = openai_client(replay, http_upstream)
    for _ in range(3):
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hit"}]
        )
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "miss"}]
            )
    with pytest.raises(openai.APIStatusError):
        list(
            client.chat.completions.create(
                model="gpt-4o", stream=True, messages=[{"role": "user", "content": "miss"}]
            )
        )
    replay.stop()
    assert http_upstream.state.connections == before
