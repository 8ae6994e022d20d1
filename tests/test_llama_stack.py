"""llama-stack recordings: read, replayed to the client that made them, exported, and the real
corpus's multi-turn conversations replayed end to end."""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from proxy_addon import cassette, llama_stack, matching, sse
from proxy_addon.cassette import Body, RecordedResponse, Stream
from proxy_addon.conversation import LookupContext
from proxy_addon.reassemble import reassemble
from proxy_addon.store import CassetteStore
from tests.conftest import FIXTURES, SEED, sdk_http_client
from tests.conversations import Conversation, drive, find_conversations, fits_shape, play

SUITE = FIXTURES.parent / "llama-stack-suite"
TAVILY = SUITE / "responses" / "661e959c98b894f6daf608d415bbf64f6a5a1af0eef8012354886062b9244f7b.json"


def fixture(prefix: str) -> Path:
    [path] = FIXTURES.glob(prefix + "*.json")
    return path


def recorded(prefix: str) -> dict[str, Any]:
    return orjson.loads(fixture(prefix).read_bytes())


def all_llama_files() -> list[Path]:
    return sorted(FIXTURES.glob("*.json")) + sorted(SUITE.glob("*/*.json"))


# -- reading ----------------------------------------------------------------------------------


def test_doubled_v1_paths_are_where_the_request_really_went():
    assert llama_stack.real_path("/v1/v1/chat/completions", "/v1/chat/completions") == \
        "/v1/chat/completions"
    assert llama_stack.real_path("/ml/v1/v1/chat/completions", "/v1/chat/completions") == \
        "/ml/v1/chat/completions"
    assert llama_stack.real_path("/api/ps", "/api/ps") == "/api/ps"
    assert llama_stack.recorder_url("https", "h", "/ml/v1/chat/completions") == \
        ("https://h/ml/v1/v1/chat/completions", "/v1/chat/completions")


def test_extra_body_is_merged_into_the_wire_body():
    assert llama_stack.wire_body({"model": "m", "extra_body": {"project_id": "p"},
                                  "extra_headers": {"x": "1"}}) == {"model": "m", "project_id": "p"}


def test_recorded_exception_is_the_providers_http_error():
    rec = cassette.load(fixture("28a43dc80443"))
    resp = rec.responses[0]
    assert resp.status == 400
    assert resp.body.value == {"error": {"message": "invalid image input",
                                         "type": "invalid_request_error", "param": None,
                                         "code": None}}


def test_tool_record_becomes_the_providers_http_call():
    rec = cassette.load(TAVILY)
    assert (rec.request.method, rec.request.url) == ("POST", "https://api.tavily.com/search")
    assert rec.request.body.value == {"api_key": "<redacted>",
                                      "query": "latest Python version 2023"}
    canon = rec.request.canonical()
    assert canon.body == {"query": "latest Python version 2023"}  # the key is not matched
    top_k = orjson.loads(orjson.loads(TAVILY.read_bytes())["response"]["body"]["__data__"]["content"])["top_k"]
    assert rec.responses[0].body.value == {"query": "latest Python version 2023", "results": top_k}


def test_hash_recipe_reproduces_the_files_own_names():
    """Checked against names llama-stack gave its files. A few files were named by older
    versions of its recipe (the 12-character prefixes, and some corpus files)."""
    fixtures = [p for p in FIXTURES.glob("*.json") if len(p.stem) > 12]
    for path in fixtures:
        name, _ = llama_stack.export(cassette.load(path))
        assert name == path.name
    suite = sorted(SUITE.glob("*/*.json"))
    same = sum(llama_stack.export(cassette.load(p))[0] == p.name for p in suite)
    assert same >= 1450, f"only {same} of {len(suite)} names reproduced"


def test_every_file_round_trips_through_our_format_losslessly():
    """import then export: the same request, and the same wire answer for the client."""
    for path in all_llama_files():
        original = orjson.loads(path.read_bytes())
        ours = cassette.loads(cassette.dumps(cassette.load(path)))
        _, doc = llama_stack.export(ours)
        assert doc["request"] == original["request"], path
        again = llama_stack.read(orjson.loads(orjson.dumps(doc)))
        assert again.responses == llama_stack.read(original).responses, path
        assert again.request.canonical() == cassette.load(path).request.canonical(), path


# -- the corpus's conversations -----------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus() -> tuple[CassetteStore, list[Conversation]]:
    store = CassetteStore(SUITE)
    store.load()
    assert len(store) == 1584 and not store.bad
    entries = [(e.recording.test_id, e.canonical.path, e.recording.request.body.value, e.answer())
               for es in store.entries.values() for e in es
               if e.canonical.path.endswith("/chat/completions") and e.recording.request.body]
    return store, find_conversations(entries)


def _send_to_store(store: CassetteStore, conv: Conversation, ctx: LookupContext):
    def send(body: dict[str, Any]) -> RecordedResponse | None:
        canon = matching.canonicalize("POST", "https://any.example" + conv.path,
                                      "application/json", orjson.dumps(body))
        hit = store.lookup(canon, ctx)
        return hit.response if hit else None
    return send


def test_every_conversation_replays_when_the_test_is_named(corpus):
    store, conversations = corpus
    fresh = CassetteStore(SUITE)
    fresh.load()
    assert len(conversations) >= 600
    for n, conv in enumerate(conversations):
        ctx = LookupContext(connection=f"conn-{n}", test_id=conv.test_id)
        assert drive(conv, _send_to_store(fresh, conv, ctx), reassemble) == len(conv.turns), \
            conv.test_id


def test_conversations_with_no_test_named(corpus):
    """Without the test's name, a first turn that several tests recorded with different answers
    cannot be told apart. The proxy prefers the answer followed by the longest recorded
    conversation, and when a client's next turn carries an answer it chose among several, it
    finds that turn as recorded after one of the others.

    When written: 692 of 699 conversations replayed end to end. Of the other 7, 6 were given an
    answer with another number of tool calls than their own (a real client would then send a
    next turn with as many tool results, as the other test did, which this driver cannot
    build), and 1 is recorded with the same answer written differently in its two later turns.
    """
    _, conversations = corpus
    fresh = CassetteStore(SUITE)
    fresh.load()
    unbuildable = other = 0
    for n, conv in enumerate(conversations):
        done, answers = play(conv, _send_to_store(fresh, conv, LookupContext(connection=f"c{n}")),
                             reassemble)
        if done < len(conv.turns):
            if fits_shape(conv, done, answers):
                other += 1
            else:
                unbuildable += 1
    assert unbuildable + other <= 7 and other <= 1, (unbuildable, other)


def test_an_answer_with_a_recorded_follow_up_is_preferred(corpus):
    store, conversations = corpus
    for conv in conversations:
        canon = matching.canonicalize("POST", "https://x" + conv.path, "application/json",
                                      orjson.dumps(conv.turns[0]))
        _, entries = store.find(canon)
        followed = [e for e in entries if e.answer() in store.followed_answers()]
        if len(entries) > 1 and 0 < len(followed) < len(entries):
            chosen = store.choose(entries, canon, LookupContext())
            assert chosen in followed
            return
    pytest.skip("no first turn with both followed and unfollowed answers in the corpus")


# -- end to end: each fixture to the client that made it ---------------------------------------


@pytest.fixture(scope="module")
def fixture_proxy(tmp_path_factory, confdir):
    from proxy_addon.process import start_proxy

    d = tmp_path_factory.mktemp("llama") / "cassettes"
    shutil.copytree(FIXTURES, d, ignore=shutil.ignore_patterns("*.txt"))
    shutil.copy(SEED, d)
    shutil.copy(TAVILY, d)
    proxy = start_proxy(d, "replay", confdir=confdir)
    yield proxy
    log = proxy.stop()
    assert "0 misses" in log


def _openai(proxy, base_url: str) -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-test-llama", base_url=base_url, max_retries=0,
                         http_client=sdk_http_client(proxy))


def _httpx(proxy) -> httpx.Client:
    return httpx.Client(proxy=proxy.url,
                        verify=ssl.create_default_context(cafile=str(proxy.ca_cert)))


def _data(item: dict[str, Any]) -> Any:
    return item["__data__"]


def test_openai_chat_stream_with_tool_calls(fixture_proxy):
    doc = recorded("c4b7e1633e3b")
    client = _openai(fixture_proxy, "https://api.openai.com/v1")
    chunks = list(client.chat.completions.create(**doc["request"]["body"]))
    expected = [openai.types.chat.ChatCompletionChunk.model_validate(_data(c))
                for c in doc["response"]["body"]]
    assert chunks == expected


def test_openai_chat_and_embeddings(fixture_proxy):
    client = _openai(fixture_proxy, "https://api.openai.com/v1")
    doc = recorded("f7c9050b819b")
    got = client.chat.completions.create(**doc["request"]["body"])
    assert got == openai.types.chat.ChatCompletion.model_validate(_data(doc["response"]["body"]))
    doc = recorded("050f63320eee")
    got = client.embeddings.create(**doc["request"]["body"])
    assert got == openai.types.CreateEmbeddingResponse.model_validate(_data(doc["response"]["body"]))


def test_completions_stream_models_and_error_on_local_servers(fixture_proxy):
    doc = recorded("8567635651a5")
    client = _openai(fixture_proxy, "http://0.0.0.0:11434/v1")
    chunks = list(client.completions.create(**doc["request"]["body"]))
    # the SDK parses leniently (finish_reason None is not in its Literal): compare as data
    assert [c.model_dump(mode="json") for c in chunks] == [_data(c) for c in doc["response"]["body"]]
    doc = recorded("models-")
    models = list(_openai(fixture_proxy, "http://localhost:8080/v1").models.list())
    assert models == [openai.types.Model.model_validate(_data(m)) for m in doc["response"]["body"]]
    doc = recorded("28a43dc80443")
    with pytest.raises(openai.BadRequestError) as err:
        _openai(fixture_proxy, "http://localhost:11434/v1").chat.completions.create(
            **doc["request"]["body"])
    assert err.value.status_code == 400
    assert err.value.body == doc["response"]["exception_data"]["body"]


def test_ollama_native_ndjson_and_json(fixture_proxy):
    doc = recorded("04172112ffbb")
    with _httpx(fixture_proxy) as client:
        r = client.post("http://localhost:11434/api/generate", json=doc["request"]["body"])
        assert r.headers["content-type"] == "application/x-ndjson"
        lines = [orjson.loads(line) for line in r.text.splitlines()]
        ps = client.get("http://localhost:11434/api/ps").json()
    assert lines == [_data(c) for c in doc["response"]["body"]]
    assert ps == _data(recorded("02c93bb3c314")["response"]["body"])


def test_anthropic_messages_stream_with_the_anthropic_sdk(fixture_proxy):
    import anthropic

    doc = recorded("f22657bfd86d")
    client = anthropic.Anthropic(
        api_key="sk-ant-test", base_url="http://0.0.0.0:11434", max_retries=0,
        http_client=anthropic.DefaultHttpxClient(proxy=fixture_proxy.url))
    events = list(client.messages.create(**doc["request"]["payload"]))
    lines = doc["response"]["body"]
    recorded_events = [orjson.loads(l[len("data: "):]) for l in lines if l.startswith("data: ")]
    assert [e.type for e in events] == [e["type"] for e in recorded_events]
    text = "".join(e.delta.text for e in events
                   if e.type == "content_block_delta" and e.delta.type == "text_delta")
    assert text == "1, 2, 3, 4, 5"


def test_tavily_tool_record_answers_the_real_http_call(fixture_proxy):
    with _httpx(fixture_proxy) as client:
        r = client.post("https://api.tavily.com/search",
                        json={"api_key": "tvly-test-123", "query": "latest Python version 2023"})
    assert r.status_code == 200
    assert r.json() == cassette.load(TAVILY).responses[0].body.value


# -- end to end: conversations of the corpus through the proxy ---------------------------------


def _as_response(r: httpx.Response) -> RecordedResponse:
    fmt = sse.stream_format(r.headers.get("content-type"))
    if fmt:
        return RecordedResponse(r.status_code, stream=Stream(fmt, sse.split(fmt, r.content)))
    return RecordedResponse(r.status_code, body=Body.from_bytes(r.content, r.headers.get("content-type")))


@pytest.mark.slow
def test_corpus_conversations_replay_through_the_proxy(corpus, proxies):
    _, conversations = corpus
    longest = sorted(conversations, key=lambda c: -len(c.turns))[:60]
    proxy = proxies(SUITE, "replay")
    with _httpx(proxy) as client:
        for conv in longest:
            def send(body: dict[str, Any]) -> RecordedResponse | None:
                r = client.post("https://api.openai.com" + conv.path, json=body,
                                headers={"x-cassette-test-id": conv.test_id or ""})
                return None if r.status_code == 404 else _as_response(r)
            assert drive(conv, send, reassemble) == len(conv.turns), conv.test_id
    assert " 0 misses" in proxy.stop()
