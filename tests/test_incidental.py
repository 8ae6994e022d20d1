"""Requests not under test (``cassette_incidental`` and the built-in list): answered quietly in a
replay, forwarded and never recorded otherwise, counted apart; and the README's list of the
built-in ones says what the code does."""

from __future__ import annotations

import re
import ssl
import tracemalloc

import httpx
import pytest

from proxy_addon.serving.incidental import BUILT_IN, BUILT_IN_ONLY, in_force, parse
from tests.conftest import ROOT, counted

PRICE_MAP = (
    "https://raw.githubusercontent.com/BerriAI/litellm/main/model_prices_and_context_window.json"
)
TRACES = "https://api.openai.com/v1/traces/ingest"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "under test"}]}


def client_of(proxy) -> httpx.Client:
    ca = ssl.create_default_context(cafile=str(proxy.ca_cert))
    return httpx.Client(proxy=proxy.url, timeout=20, verify=ca)


def test_incidental_requests_are_forwarded_unrecorded_then_answered_quietly(
    tmp_path, http_upstream, proxies
):
    cassettes = tmp_path / "c"
    port = http_upstream.server_address[1]
    mine = {"cassette_incidental": f"POST 127.0.0.1:{port}/telemetry/* 202"}
    telemetry = http_upstream.base_url + "/telemetry/v1/events"

    record = proxies(cassettes, "record", **mine)
    with client_of(record) as client:
        forwarded = client.post(telemetry, json={"event": "start"})
        assert client.post(http_upstream.base_url + "/v1/chat/completions", json=CHAT).is_success
    log = record.stop()
    assert forwarded.status_code == 404  # the stand-in's own answer: it was forwarded
    assert [s.path for s in http_upstream.state.seen] == [
        "/telemetry/v1/events",
        "/v1/chat/completions",
    ]
    files = [p.relative_to(cassettes).as_posix() for p in cassettes.rglob("*.json")]
    assert len(files) == 1 and "/v1/chat/completions/" in files[0]  # never recorded
    assert counted(log, "recorded", "incidental") == (1, 1)

    replay = proxies(cassettes, "replay", **mine)
    with client_of(replay) as client:
        quiet = client.post(telemetry, json={"event": "again"})
        hit = client.post(http_upstream.base_url + "/v1/chat/completions", json=CHAT)
        traces = client.post(TRACES, json={"data": []})  # built in: the OpenAI Agents SDK's
        prices = client.get(PRICE_MAP)  # built in: LiteLLM's, which it has a copy of
    log = replay.stop()
    assert (quiet.status_code, quiet.json(), quiet.headers["x-cassette-incidental"]) == (
        202,
        {},
        "1",
    )
    assert hit.status_code == 200 and "under test" in hit.text
    assert (traces.status_code, traces.content) == (204, b"")
    assert (prices.status_code, prices.json()) == (404, {})
    assert len(http_upstream.state.seen) == 2  # nothing more was forwarded
    assert counted(log, "hits", "misses", "refused", "incidental") == (1, 0, 0, 3)
    assert (
        "cassette: POST api.openai.com/v1/traces/ingest is not under test (OpenAI Agents SDK "
        "traces): answered 204, never recorded" in log
    )
    assert f"is not under test (cassette_incidental=POST 127.0.0.1:{port}/telemetry/* 202)" in log

    off = proxies(cassettes, "replay", cassette_incidental_builtin="false")
    with client_of(off) as client:
        missed = client.post(TRACES, json={"data": []})
        telemetry_missed = client.post(telemetry, json={"event": "again"})
    log = off.stop()
    assert missed.status_code == telemetry_missed.status_code == 424
    assert counted(log, "misses", "incidental") == (2, 0)


def test_patterns_parse_and_match_as_documented():
    assert parse("post Telemetry.example.com/v1/*").pattern == "POST telemetry.example.com/v1/*"
    assert (parse("* example.com/x 404").status, parse("GET example.com/x").status) == (404, 204)
    for bad, why in [
        ("GET", "is not METHOD HOST/PATH"),
        ("GET https://example.com/x", "is not METHOD HOST/PATH"),
        ("GET example.com", "is not METHOD HOST/PATH"),
        ("G3T example.com/x", "is not an HTTP method"),
        ("GET example.com/x 99", "is not an HTTP status"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse(bad)
    found = in_force(["* *.internal/*", "GET api.openai.com/v1/traces/ingest 500"], builtin=True)
    assert found.match("DELETE", "db.internal", "/a/b").pattern == "* *.internal/*"
    # in the host a * stays within the host: a path that names a host does not match
    assert found.match("GET", "evil.example", "/x.internal/a") is None
    # the user's patterns come first; the built-in list still holds the rest
    assert found.match("GET", "api.openai.com", "/v1/traces/ingest").status == 500
    assert found.match("POST", "api.openai.com", "/v1/traces/ingest").status == 204
    assert found.match("POST", "api.openai.com", "/v1/chat/completions") is None
    assert in_force([], builtin=False).match("POST", "api.openai.com", "/v1/traces/ingest") is None


def test_the_readmes_list_of_built_in_incidental_requests_is_the_codes():
    """Each row of the README's list: its example request matches the entry it names, with the
    status it says; and every entry has a row."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| sent by | request | answer |") : text.index("Not in the list")]
    rows = re.findall(r"^\| (.+?) \| `(\w+) (\S+?)` \| (\d{3})", table, re.MULTILINE)
    assert len(rows) >= len(BUILT_IN)
    seen = set()
    for what, method, url, status in rows:
        host, _, path = url.removeprefix("https://").partition("/")
        entry = BUILT_IN_ONLY.match(method, host, "/" + path)
        assert entry is not None, url
        assert (entry.what, entry.status) == (what, int(status)), url
        seen.add(entry.pattern)
    assert seen == {entry.pattern for entry in BUILT_IN}


def test_an_answer_remembered_is_the_same_answer_and_the_memory_stays_bounded():
    """``match`` remembers its answer per request line (a run asks the same few): asked again,
    each line gets the answer it got first, a miss stays a miss, and a proxy that sees ever new
    paths keeps a bounded number of answers, none for a long line."""
    found = in_force(["* *.internal/*", "GET api.openai.com/v1/traces/ingest 500"], builtin=True)
    asked = [
        ("DELETE", "db.internal", "/a/b", "* *.internal/*"),
        ("GET", "api.openai.com", "/v1/traces/ingest", "GET api.openai.com/v1/traces/ingest"),
        ("POST", "api.openai.com", "/v1/traces/ingest", "POST api.openai.com/v1/traces/ingest"),
        ("POST", "api.openai.com", "/v1/chat/completions", None),
    ]
    for _ in range(3):
        for method, host, path, pattern in asked:
            answer = found.match(method, host, path)
            assert (answer.pattern if answer else None) == pattern, (method, host, path)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(50_000):
            assert found.match("POST", "api.openai.com", f"/v1/threads/thread_{i:040d}") is None
        for i in range(300):  # a long path's answer is not kept at all: each would hold 10 kB
            assert found.match("GET", "api.openai.com", f"/v1/files/{i:010000d}") is None
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 1_000_000, f"{kept:,} bytes kept after 50,000 distinct paths and 300 long ones"
    assert found.match("DELETE", "db.internal", "/a/b").pattern == "* *.internal/*"
