"""End to end: a real mitmdump with the addon, the real openai SDK, a real local upstream."""

from __future__ import annotations

import json
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from proxy_addon import formats, model
from proxy_addon.bodies import sse
from proxy_addon.formats import cassette
from proxy_addon.runner.process import ProxyStartError, start_proxy
from proxy_addon.store.layout import iter_cassette_files
from tests.conftest import (
    FAKE_KEY,
    SEED,
    TEST_ADDONS,
    counted,
    openai_client,
    record_prompts,
    sdk_http_client,
    wait_until,
)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def exercise(client: openai.OpenAI) -> dict[str, Any]:
    """Every kind of call issue #2 names; returns what the application saw, as plain data."""
    out: dict[str, Any] = {}
    msgs = [{"role": "user", "content": "Tell me a joke"}]
    out["chat"] = client.chat.completions.create(model="gpt-4o", messages=msgs).model_dump()
    out["chat_stream"] = [
        c.model_dump()
        for c in client.chat.completions.create(model="gpt-4o", messages=msgs, stream=True)
    ]
    out["chat_stream_usage"] = [
        c.model_dump()
        for c in client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "count"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    ]
    out["tool_stream"] = [
        c.model_dump()
        for c in client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "weather?"}],
            stream=True,
            tools=[WEATHER_TOOL],
        )
    ]
    out["embeddings"] = client.embeddings.create(
        model="text-embedding-3-small", input=["a", "b"]
    ).model_dump()
    out["models"] = [m.model_dump() for m in client.models.list()]
    out["responses_stream"] = [
        e.model_dump() for e in client.responses.create(model="gpt-4o", input="Say hi", stream=True)
    ]
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="rate-limited", messages=msgs)
    headers = err.value.response.headers
    out["rate_limit"] = (
        err.value.status_code,
        headers.get("retry-after"),
        headers.get("x-ratelimit-remaining-requests"),
        err.value.body,
    )
    out["repeated"] = [
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "again"}]
        )
        .choices[0]
        .message.content
        for _ in range(3)
    ]
    return out


def all_bytes(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in directory.rglob("*") if p.is_file())


def test_record_then_replay_gives_identical_sdk_objects(tmp_path, upstream, proxies):
    cassettes = tmp_path / "cassettes"
    rec = proxies(cassettes, "record")
    recorded = exercise(openai_client(rec, upstream))
    log = rec.stop()
    assert "cassette summary: 11 recorded" in log
    assert recorded["repeated"] == [f"Answer {n} to: again" for n in (1, 2, 3)]
    assert recorded["chat_stream"][-1]["choices"][0]["finish_reason"] == "stop"
    assert recorded["chat_stream_usage"][-1]["usage"]["total_tokens"] == 11
    assert recorded["rate_limit"][:3] == (429, "7", "0")

    files = list(iter_cassette_files(cassettes))
    assert len(files) == 9  # one file per distinct request; the repeated one holds 3 responses
    for f in files:
        formats.load(f)  # every file parses and validates
    assert FAKE_KEY.encode() not in all_bytes(cassettes)

    hits_after_recording = upstream.state.hits
    replay = proxies(cassettes, "replay")
    replayed = exercise(openai_client(replay, upstream))
    assert replayed == recorded
    assert upstream.state.hits == hits_after_recording  # nothing reached the upstream
    # past the end of a sequence the last answer repeats
    again = openai_client(replay, upstream).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "again"}]
    )
    assert again.choices[0].message.content == "Answer 3 to: again"
    assert "cassette summary: 12 hits, 0 misses, 0 unused" in replay.stop()


def test_cassette_is_readable_json_with_events(tmp_path, http_upstream, proxies):
    cassettes = tmp_path / "cassettes"
    rec = proxies(cassettes, "record")
    list(
        openai_client(rec, http_upstream).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Tell me a joke"}], stream=True
        )
    )
    rec.stop()
    [path] = list(iter_cassette_files(cassettes))
    assert path.relative_to(cassettes).parts[:4] == (
        f"127.0.0.1_{http_upstream.server_address[1]}",
        "v1",
        "chat",
        "completions",
    )
    doc = orjson.loads(path.read_bytes())
    assert doc["version"] == 1  # HTTP-only files keep version 1: older readers still read them
    assert doc["request"]["body"]["messages"][0]["content"] == "Tell me a joke"
    assert doc["request"]["headers"]["authorization"] == "<redacted>"
    stream = doc["responses"][0]["stream"]
    assert stream["format"] == "sse" and stream["complete"] is True
    assert stream["events"][1]["data"]["choices"][0]["delta"]["content"] == "Answer"
    assert stream["events"][-1]["data"] == "[DONE]"
    offsets = [e["t"] for e in stream["events"]]
    assert offsets == sorted(offsets) and offsets[-1] > offsets[0]
    assert path.read_text().startswith('{\n  "format": "llm-cassette"')  # pretty-printed


def test_stream_reaches_client_while_upstream_still_sends(tmp_path, http_upstream, proxies):
    """The upstream holds its stream after the first event until the client has that event:
    it gets it, so the proxy passed it on before the stream ended."""
    http_upstream.state.gate = threading.Event()
    rec = proxies(tmp_path / "c", "record")
    stream = openai_client(rec, http_upstream).chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "one two three four five six"}],
        stream=True,
    )
    first = next(iter(stream))
    http_upstream.state.gate.set()
    rest = list(stream)
    assert first.choices[0].delta.role == "assistant" and rest
    assert http_upstream.state.gate_opened  # the client had the first event mid-stream


def test_stream_saved_when_sdk_hangs_up_after_done(tmp_path, http_upstream, proxies):
    """The SDK closes at [DONE] before the body's last chunk: mitmproxy fires `error`, and the
    stream is complete all the same."""
    http_upstream.state.tail_delay = 1.0
    rec = proxies(tmp_path / "c", "record")
    chunks = list(
        openai_client(rec, http_upstream).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hang up"}], stream=True
        )
    )
    wait_until(lambda: "cassette: recorded" in rec.log, "the cassette written after the hang-up")
    log = rec.stop()
    assert "Client disconnected." in log  # the error path, not the response hook
    [path] = list(iter_cassette_files(tmp_path / "c"))
    stream = formats.load(path).responses[0].stream
    assert stream is not None and stream.complete
    assert len(stream.events) == len(chunks) + 1  # + [DONE]


def test_stream_cut_by_upstream_is_not_saved_as_complete(tmp_path, http_upstream, proxies):
    rec = proxies(tmp_path / "c", "record")
    client = openai_client(rec, http_upstream)
    with pytest.raises(openai.APIConnectionError):  # the SDK's error for a broken stream
        list(
            client.chat.completions.create(
                model="cut-off", messages=[{"role": "user", "content": "x"}], stream=True
            )
        )
    log = rec.stop()
    assert "cut off by the upstream" in log and "saved as incomplete" in log
    [path] = list(iter_cassette_files(tmp_path / "c"))
    [resp] = json.loads(path.read_bytes())["responses"]  # read as it is on disk
    assert resp["stream"]["complete"] is False and resp["stream"]["events"]


def test_seed_replays_as_its_17_chunks_with_default_base_url(seed_dir, proxies):
    proxy = proxies(seed_dir, "replay")
    client = openai.OpenAI(
        api_key="sk-test-seed", max_retries=0, http_client=sdk_http_client(proxy)
    )
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Tell me a joke"}], stream=True
        )
    )
    seed = orjson.loads(SEED.read_bytes())
    expected = [
        openai.types.chat.ChatCompletionChunk.model_validate(c["__data__"])
        for c in seed["response"]["body"]
    ]
    assert len(chunks) == 17
    assert chunks == expected
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "Why don't skeletons fight each other? \n\nThey don't have the guts!"


def test_each_hit_is_a_response_of_its_own_whatever_another_addon_does_to_one(
    tmp_path, http_upstream, proxies
):
    """Hits on one recording share its bytes, not one response: another addon that changes
    each response (a header added, one removed, the body appended to:
    tests/addons/touch_responses.py) changes that one only, and the next hit is as recorded."""
    cassettes = tmp_path / "c"
    record_prompts(proxies, cassettes, http_upstream, "hi")
    proxy = proxies(cassettes, "replay", extra_scripts=(TEST_ADDONS / "touch_responses.py",))
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(proxy=proxy.url, timeout=10) as client:
        answers = [
            client.post(http_upstream.base_url + "/v1/chat/completions", json=body)
            for _ in range(3)
        ]
    recorded = orjson.loads(next(iter_cassette_files(cassettes)).read_bytes())["responses"][0]
    assert ["x-request-id", "req_fake"] in recorded["headers"]
    for n, answer in enumerate(answers, 1):
        assert answer.status_code == 200
        assert answer.headers.get_list("x-touched") == [str(n)]
        assert "x-request-id" not in answer.headers
        assert answer.content == orjson.dumps(recorded["body"]) + b"!"


def test_miss_is_a_424_naming_request_and_nearest_difference(seed_dir, proxies):
    """A miss is a 424 (no SDK class reads it as "not found", none retries it) with
    ``x-should-retry: false``, in the error shape of the request's provider."""
    proxy = proxies(seed_dir, "replay")
    client = openai.OpenAI(  # the SDK's default retries: a retried miss would count twice
        api_key="sk-test-seed", http_client=sdk_http_client(proxy)
    )
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Tell me a pun"}], stream=True
        )
    assert type(err.value) is openai.APIStatusError and err.value.status_code == 424
    assert err.value.response.headers["x-should-retry"] == "false"
    assert err.value.response.headers["x-cassette-miss"] == "1"
    message = err.value.message
    assert message.startswith("Error code: 424 - cassette miss: ")  # error.message, alone
    assert "POST api.openai.com/v1/chat/completions" in message
    assert "no recording" in message
    assert "llama-stack-recording-chat-stream.json" in message
    assert "messages[0].content" in message
    # plain mitmdump's spelling (cassette run and pytest: tests/test_cli.py, test_pytest_plugin)
    assert message.endswith("Record it with --set cassette_mode=auto (or record).")
    with pytest.raises(openai.APIStatusError) as err:
        client.embeddings.create(model="text-embedding-3-small", input="x")
    assert "No recording exists for this endpoint" in err.value.message
    claude = anthropic.Anthropic(api_key="sk-ant-test-seed", http_client=sdk_http_client(proxy))
    with pytest.raises(anthropic.APIStatusError) as miss:
        claude.messages.create(
            model="claude-x", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    assert type(miss.value) is anthropic.APIStatusError and miss.value.status_code == 424
    body = miss.value.response.json()  # Anthropic's own error shape
    assert body["type"] == "error" and body["error"]["type"] == "cassette_miss"
    assert body["error"]["message"].startswith("cassette miss: ")
    assert "POST api.anthropic.com/v1/messages" in str(miss.value)
    gemini = "https://generativelanguage.googleapis.com/v1beta/models/gemini-x:generateContent"
    ca = ssl.create_default_context(cafile=str(proxy.ca_cert))
    with httpx.Client(proxy=proxy.url, verify=ca, timeout=20) as raw:
        google = raw.post(gemini, json={"contents": []})
    assert google.status_code == 424  # and Google's error shape
    assert google.json()["error"]["status"] == "FAILED_PRECONDITION"
    assert google.json()["error"]["message"].startswith("cassette miss: ")
    log = proxy.stop()
    assert "cassette miss" in log
    assert "cassette summary: 0 hits, 4 misses, 1 unused recordings (of 1)" in log


def test_paced_replay_spreads_events_over_time(tmp_path, proxies):
    cassettes = tmp_path / "c"
    events = [
        sse.Event(
            data={
                "choices": [{"index": 0, "delta": {"content": f"w{i}"}}],
                "id": "x",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "gpt-4o",
            },
            t=0.4 * i,
        )
        for i in range(4)
    ]
    events.append(sse.Event(data="[DONE]", t=1.2))
    rec = model.Recording(
        request=model.RecordedRequest(
            "POST",
            "https://api.openai.com/v1/chat/completions",
            {"content-type": "application/json"},
            model.Body("json", {"model": "gpt-4o", "stream": True, "messages": []}),
        ),
        responses=[
            model.RecordedResponse(
                200, [["content-type", "text/event-stream"]], stream=model.Stream("sse", events)
            )
        ],
    )
    cassettes.mkdir()
    (cassettes / "paced.json").write_bytes(cassette.dumps(rec))

    def arrival_times(pace: str) -> list[float]:
        proxy = proxies(cassettes, "replay", cassette_pace=pace)
        client = openai.OpenAI(
            api_key="sk-test-x", max_retries=0, http_client=sdk_http_client(proxy)
        )
        start = time.monotonic()
        times = [
            time.monotonic() - start
            for _ in client.chat.completions.create(model="gpt-4o", messages=[], stream=True)
        ]
        proxy.stop()
        return times

    # lower bounds only: a loaded machine may deliver an event late, never early; each event
    # comes no sooner after the request than its recorded offset times the pace
    paced = arrival_times("1")
    assert len(paced) == 4
    assert all(paced[i] >= 0.4 * i - 0.02 for i in range(4)), paced
    # spread over time, not one block: most gaps are near the recorded 0.4 s (a late event
    # followed by one on time shortens one gap; a block has none)
    assert sum(b - a >= 0.2 for a, b in zip(paced, paced[1:])) >= 2, paced
    half = arrival_times("0.5")
    assert all(half[i] >= 0.2 * i - 0.02 for i in range(4)), half


def test_secrets_never_reach_disk(tmp_path, http_upstream, proxies):
    secret = "sk-test-very-secret-value-42"
    rec = proxies(tmp_path / "c", "record", cassette_redact_headers="x-custom-token")
    with httpx.Client(proxy=rec.url) as client:
        r = client.post(
            http_upstream.base_url + f"/v1/chat/completions?key={secret}&api_key={secret}&v=1",
            json={
                "model": "gpt-4o",
                "messages": [{"role": "user", "content": "hi"}],
                "api_key": secret,
            },
            headers={
                "authorization": f"Bearer {secret}",
                "api-key": secret,
                "x-api-key": secret,
                "x-goog-api-key": secret,
                "cookie": f"session={secret}",
                "proxy-authorization": f"Basic {secret}",
                "x-custom-token": secret,
            },
        )
        assert r.status_code == 200
    rec.stop()
    seen = http_upstream.state.seen[-1]
    assert seen.headers["authorization"] == f"Bearer {secret}"  # the live request kept it
    assert secret in seen.path
    on_disk = all_bytes(tmp_path / "c")
    assert on_disk and secret.encode() not in on_disk
    assert b"<redacted>" in on_disk


def test_auto_mode_replays_hits_and_records_misses(tmp_path, http_upstream, proxies):
    cassettes = tmp_path / "c"
    record_prompts(proxies, cassettes, http_upstream, "old")
    hits = http_upstream.state.hits
    auto = proxies(cassettes, "auto")
    client = openai_client(auto, http_upstream)
    old = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "old"}]
    )
    assert old.choices[0].message.content == "Answer 1 to: old"
    assert http_upstream.state.hits == hits
    new = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "new"}]
    )
    assert new.choices[0].message.content == "Answer 1 to: new"
    assert http_upstream.state.hits == hits + 1
    assert counted(auto.stop(), "hits", "recorded", "misses") == (1, 1, 0)
    assert len(list(iter_cassette_files(cassettes))) == 2


def test_ignored_fields_do_not_break_matching(tmp_path, http_upstream, proxies):
    cassettes = tmp_path / "c"
    rec = proxies(cassettes, "record")
    openai_client(rec, http_upstream).chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "hi"}],
        user="alice",
        metadata={"trace_id": "t-1"},
    )
    rec.stop()
    replay = proxies(cassettes, "replay", cassette_ignore="user,metadata.trace_id")
    got = openai_client(replay, http_upstream).chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "hi"}],
        user="bob",
        metadata={"trace_id": "t-2"},
    )
    assert got.choices[0].message.content == "Answer 1 to: hi"


def test_concurrent_recordings_all_land_whole(tmp_path, http_upstream, proxies):
    cassettes = tmp_path / "c"
    rec = proxies(cassettes, "record")
    client = openai_client(rec, http_upstream)
    errors: list[BaseException] = []

    def call(i: int) -> None:
        try:
            list(
                client.chat.completions.create(
                    model="gpt-4o",
                    messages=[{"role": "user", "content": f"prompt {i % 6}"}],
                    stream=True,
                )
            )
        except BaseException as e:  # noqa: BLE001 - any failure of a thread is reported below
            errors.append(e)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rec.stop()
    assert not errors
    files = list(iter_cassette_files(cassettes))
    assert len(files) == 6
    assert sum(len(formats.load(f).responses) for f in files) == 12
    assert not [p for p in cassettes.rglob(".*") if p.is_file()]  # no temp files left


@pytest.mark.parametrize(
    "option, value, expected",
    [
        ("cassette_pace", "fast", "cassette_pace must be a number"),
        ("cassette_pace", "-1", "cassette_pace must be a finite number >= 0"),
        (
            "cassette_mode",
            "replya",
            "cassette_mode must be one of replay, record, auto, passthrough",
        ),
        ("cassette_ignore", "[]", "cassette_ignore"),
        (
            "cassette_ignore",
            "user,messages[-1]",
            "cassette_ignore: 'messages[-1]' is not a JSON path",
        ),
        ("cassette_ignore", "a[x]", "cassette_ignore: 'a[x]' is not a JSON path"),
        (
            "cassette_normalize",
            "([a-z]=x",
            "cassette_normalize: '([a-z]=x': '([a-z]' is not a valid regular expression",
        ),
        ("cassette_normalize", "datez", "cassette_normalize: 'datez' is neither a preset"),
        ("cassette_max_age", "30", "cassette_max_age: '30' is not an age"),
        ("cassette_stale", "sometimes", "cassette_stale must be warn or fail"),
        ("stream_large_bodies", "1m", "stream_large_bodies cannot be used in replay mode"),
        (
            "cassette_incidental",
            "POST https://x.example/y",
            "cassette_incidental: 'POST https://x.example/y' is not METHOD HOST/PATH [STATUS]",
        ),
        (
            "cassette_host_map",
            "localhost:8000",
            "cassette_host_map: 'localhost:8000' is not FROM=TO",
        ),
    ],
)
def test_bad_option_stops_mitmdump_with_a_clear_message(tmp_path, confdir, option, value, expected):
    (tmp_path / "c").mkdir()
    with pytest.raises(ProxyStartError) as err:
        if option == "cassette_mode":
            start_proxy(tmp_path / "c", value, confdir=confdir)
        else:
            start_proxy(tmp_path / "c", "replay", confdir=confdir, options={option: value})
    assert expected in str(err.value)


def test_replay_of_missing_directory_is_refused(tmp_path, confdir):
    with pytest.raises(ProxyStartError) as err:
        start_proxy(tmp_path / "nowhere", "replay", confdir=confdir)
    assert "is not a directory: nothing to replay" in str(err.value)


def test_passthrough_forwards_records_nothing_and_strips_the_test_header(
    tmp_path, http_upstream, proxies
):
    cassettes = tmp_path / "c"
    cassettes.mkdir()
    proxy = proxies(cassettes, "passthrough")
    client = openai.OpenAI(
        api_key=FAKE_KEY,
        base_url=http_upstream.base_url + "/v1",
        max_retries=0,
        default_headers={"x-cassette-test-id": "tests/x.py::t"},
        http_client=openai.DefaultHttpxClient(proxy=proxy.url),
    )
    for _ in range(2):
        got = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "live"}]
        )
    assert got.choices[0].message.content == "Answer 2 to: live"  # each call reached upstream
    assert not any(k.lower() == "x-cassette-test-id" for k in http_upstream.state.seen[-1].headers)
    # spelt as Go's net/http sends every header name (the SDK sends it in lower case)
    with httpx.Client(proxy=proxy.url) as plain:
        plain.post(
            http_upstream.base_url + "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "go"}]},
            headers={"X-Cassette-Test-Id": "tests/x.py::t"},
        ).raise_for_status()
    seen = http_upstream.state.seen[-1].headers
    assert "Host" in seen and not any(k.lower() == "x-cassette-test-id" for k in seen)
    assert counted(proxy.stop(), "hits", "recorded", "misses", "requests") == (0, 0, 0, 3)
    assert not list(iter_cassette_files(cassettes))
