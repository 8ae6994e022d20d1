"""llama-stack recordings: read, replayed to the client that made them, exported, and the real
corpus's multi-turn conversations replayed end to end."""

from __future__ import annotations

import shutil
import ssl
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import openai
import orjson
import pytest

from proxy_addon import formats
from proxy_addon.formats import cassette, llama_stack, llama_stack_export
from tests.conftest import FIXTURES, SEED, counted, sdk_http_client
from tests.conversations import (
    Answer,
    Conversation,
    answer_of_chunks,
    answer_of_completion,
    find_conversations,
    play,
    play_as_client,
    stream_chunks,
)
from tests.keys import recorded_key

TAVILY_FILE = "responses/661e959c98b894f6daf608d415bbf64f6a5a1af0eef8012354886062b9244f7b.json"
# With no test named (measured when written; the README's llama-stack section explains them):
COHERENT_AS_RECORDED = 324  # conversations sent as recorded that got the answers they carry
CONTINUED_AS_CLIENT = 692  # conversations a client building its next turns plays to the end


def fixture(prefix: str) -> Path:
    [path] = FIXTURES.glob(prefix + "*.json")
    return path


def recorded(prefix: str) -> dict[str, Any]:
    return orjson.loads(fixture(prefix).read_bytes())


def all_llama_files(suite: Path) -> list[Path]:
    return sorted(FIXTURES.glob("*.json")) + sorted(suite.glob("*/*.json"))


# -- reading ----------------------------------------------------------------------------------


def test_doubled_v1_paths_are_where_the_request_really_went():
    assert (
        llama_stack.real_path("/v1/v1/chat/completions", "/v1/chat/completions")
        == "/v1/chat/completions"
    )
    assert (
        llama_stack.real_path("/ml/v1/v1/chat/completions", "/v1/chat/completions")
        == "/ml/v1/chat/completions"
    )
    assert llama_stack.real_path("/api/ps", "/api/ps") == "/api/ps"
    assert llama_stack_export.recorder_url("https", "h", "/ml/v1/chat/completions") == (
        "https://h/ml/v1/v1/chat/completions",
        "/v1/chat/completions",
    )


def test_extra_body_is_merged_into_the_wire_body():
    assert llama_stack.sdk_call_body(
        {"model": "m", "extra_body": {"project_id": "p"}, "extra_headers": {"x": "1"}}
    ) == {"model": "m", "project_id": "p"}


def test_recorded_exception_is_the_providers_http_error():
    rec = formats.load(fixture("28a43dc80443"))
    resp = rec.responses[0]
    assert resp.status == 400
    assert resp.body.value == {
        "error": {
            "message": "invalid image input",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }


def test_tool_record_becomes_the_providers_http_call(llama_suite):
    tavily = llama_suite / TAVILY_FILE
    rec = formats.load(tavily)
    assert (rec.request.method, rec.request.url) == ("POST", "https://api.tavily.com/search")
    assert rec.request.body.value == {
        "api_key": "<redacted>",
        "query": "latest Python version 2023",
    }
    canon = recorded_key(rec.request)
    assert canon.body == {"query": "latest Python version 2023"}  # the key is not matched
    top_k = orjson.loads(
        orjson.loads(tavily.read_bytes())["response"]["body"]["__data__"]["content"]
    )["top_k"]
    assert rec.responses[0].body.value == {"query": "latest Python version 2023", "results": top_k}


def test_hash_recipe_reproduces_the_files_own_names(llama_suite):
    """Checked against names llama-stack gave its files. A few files were named by older
    versions of its recipe (the 12-character prefixes, and some corpus files)."""
    fixtures = [p for p in FIXTURES.glob("*.json") if len(p.stem) > 12]
    for path in fixtures:
        name, _ = llama_stack_export.export(formats.load(path))
        assert name == path.name
    suite = sorted(llama_suite.glob("*/*.json"))
    same = sum(llama_stack_export.export(formats.load(p))[0] == p.name for p in suite)
    assert same == 1456, f"{same} of {len(suite)} names reproduced"  # the others: older recipes


def test_every_file_round_trips_through_our_format_losslessly(llama_suite):
    """import then export: the same request, and the same wire answer for the client."""
    for path in all_llama_files(llama_suite):
        original = orjson.loads(path.read_bytes())
        ours = formats.loads(cassette.dumps(formats.load(path)))
        _, doc = llama_stack_export.export(ours)
        assert doc["request"] == original["request"], path
        again = llama_stack.read(orjson.loads(orjson.dumps(doc)))
        assert again.responses == llama_stack.read(original).responses, path
        assert recorded_key(again.request) == recorded_key(formats.load(path).request), path


# -- the corpus's conversations, through mitmdump --------------------------------------------


@pytest.fixture(scope="module")
def conversations(llama_suite: Path) -> list[Conversation]:
    found = find_conversations(llama_suite)
    assert len(found) == 699  # read from the raw files by tests/conversations.py
    return found


def each_client(
    proxy, conversations: list[Conversation], name_the_test: bool
) -> Iterator[tuple[Conversation, Callable[[dict[str, Any]], Answer]]]:
    """For each conversation, a fresh client connection through the real openai SDK, pointed at
    the base URL the conversation was recorded against, and a function that sends one call's
    arguments and returns the answer received."""
    verify = ssl.create_default_context(cafile=str(proxy.ca_cert))
    for conv in conversations:
        headers = {"x-cassette-test-id": conv.test_id} if name_the_test and conv.test_id else {}
        with openai.DefaultHttpxClient(proxy=proxy.url, verify=verify, timeout=30) as http:
            client = openai.OpenAI(
                api_key="sk-test-corpus",
                base_url=conv.turns[0].base_url,
                max_retries=0,
                default_headers=headers,
                http_client=http,
            )

            def send(call_args: dict[str, Any]) -> Answer:
                # the SDK sends the request; its answer is read as JSON, not built into the
                # SDK's models (24 ms of a turn's CPU, under cProfile, for 1549 turns)
                raw = client.chat.completions.with_raw_response.create(**call_args)  # noqa: B023
                body = raw.http_response.read()
                if call_args.get("stream"):
                    return answer_of_chunks(stream_chunks(body))
                return answer_of_completion(orjson.loads(body))

            yield conv, send


@pytest.mark.slow
def test_every_corpus_conversation_is_coherent_when_the_test_is_named(
    conversations, llama_suite, proxies
):
    """Every turn sent exactly as recorded, the client naming its test (x-cassette-test-id):
    each answer is the one the next recorded turn carries, and every turn is answered."""
    proxy = proxies(llama_suite, "replay")
    failed = []
    for conv, send in each_client(proxy, conversations, name_the_test=True):
        played = play(conv, lambda turn: send(turn.call_args))  # noqa: B023 - called at once
        if not played.ok(conv):
            failed.append((conv.test_id, played.incoherent))
    assert not failed, failed[:5]
    turns = sum(len(c.turns) for c in conversations)
    assert f"{turns} hits, 0 misses" in proxy.stop()


@pytest.mark.slow
@pytest.mark.timeout(400)  # 699 conversations through two proxies: over 120 s at a load of 8
def test_corpus_conversations_with_no_test_named(conversations, llama_suite, proxies):
    """With no test named, 662 of the 699 conversations start with a turn that several tests
    recorded with different answers: the request alone cannot tell which one this client's
    next turn carries. Two measures, with the floors measured when written (README):

    - every turn sent exactly as recorded: all are answered, and the conversation is coherent
      when the proxy's choice was the answer its next turn carries;
    - as a chat client does, each next turn built from the answers received: the proxy finds
      the next turn as recorded after one of the other answers, so the conversation goes on.
    """
    as_recorded, as_client = proxies(llama_suite, "replay"), proxies(llama_suite, "replay")

    def send_as_recorded() -> tuple[int, int]:
        coherent = answered = 0
        for conv, send in each_client(as_recorded, conversations, name_the_test=False):
            played = play(conv, lambda turn: send(turn.call_args))  # noqa: B023 - called at once
            answered += played.turns_answered == len(conv.turns)
            coherent += played.ok(conv)
        return coherent, answered

    def send_as_client() -> Counter[str]:
        return Counter(
            play_as_client(conv, send)
            for conv, send in each_client(as_client, conversations, name_the_test=False)
        )

    # two proxies, each with its own conversation in order: the two measures run side by side
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.submit(send_as_recorded), pool.submit(send_as_client)
        (coherent, answered), outcomes = first.result(), second.result()
    as_recorded.stop()
    as_client.stop()
    print(
        f"no test named: as recorded {coherent} coherent, {answered} answered of "
        f"{len(conversations)}; as a client: {dict(outcomes)}"
    )
    assert answered == len(conversations)  # every turn is recorded: none may miss
    assert coherent >= COHERENT_AS_RECORDED, coherent
    assert outcomes["answered"] >= CONTINUED_AS_CLIENT, outcomes


# -- end to end: each fixture to the client that made it ---------------------------------------


@pytest.fixture(scope="module")
def fixture_proxy(tmp_path_factory, confdir, llama_suite):
    from proxy_addon.runner.process import start_proxy

    d = tmp_path_factory.mktemp("llama") / "cassettes"
    shutil.copytree(FIXTURES, d, ignore=shutil.ignore_patterns("*.txt"))
    shutil.copy(SEED, d)
    shutil.copy(llama_suite / TAVILY_FILE, d)
    proxy = start_proxy(d, "replay", confdir=confdir)
    yield proxy
    log = proxy.stop()
    assert counted(log, "misses", "internal_errors") == (0, 0)


def _openai(proxy, base_url: str) -> openai.OpenAI:
    return openai.OpenAI(
        api_key="sk-test-llama",
        base_url=base_url,
        max_retries=0,
        http_client=sdk_http_client(proxy),
    )


def _httpx(proxy) -> httpx.Client:
    return httpx.Client(
        proxy=proxy.url, verify=ssl.create_default_context(cafile=str(proxy.ca_cert))
    )


def _data(item: dict[str, Any]) -> Any:
    return item["__data__"]


def test_openai_chat_stream_with_tool_calls(fixture_proxy):
    doc = recorded("c4b7e1633e3b")
    client = _openai(fixture_proxy, "https://api.openai.com/v1")
    chunks = list(client.chat.completions.create(**doc["request"]["body"]))
    expected = [
        openai.types.chat.ChatCompletionChunk.model_validate(_data(c))
        for c in doc["response"]["body"]
    ]
    assert chunks == expected


def test_openai_chat_and_embeddings(fixture_proxy):
    client = _openai(fixture_proxy, "https://api.openai.com/v1")
    doc = recorded("f7c9050b819b")
    got = client.chat.completions.create(**doc["request"]["body"])
    assert got == openai.types.chat.ChatCompletion.model_validate(_data(doc["response"]["body"]))
    doc = recorded("050f63320eee")
    got = client.embeddings.create(**doc["request"]["body"])
    assert got == openai.types.CreateEmbeddingResponse.model_validate(
        _data(doc["response"]["body"])
    )


def test_completions_stream_models_and_error_on_local_servers(fixture_proxy):
    doc = recorded("8567635651a5")
    client = _openai(fixture_proxy, "http://0.0.0.0:11434/v1")
    chunks = list(client.completions.create(**doc["request"]["body"]))
    # the SDK parses leniently (finish_reason None is not in its Literal): compare as data
    assert [c.model_dump(mode="json") for c in chunks] == [
        _data(c) for c in doc["response"]["body"]
    ]
    doc = recorded("models-")
    models = list(_openai(fixture_proxy, "http://localhost:8080/v1").models.list())
    assert models == [openai.types.Model.model_validate(_data(m)) for m in doc["response"]["body"]]
    doc = recorded("28a43dc80443")
    with pytest.raises(openai.BadRequestError) as err:
        _openai(fixture_proxy, "http://localhost:11434/v1").chat.completions.create(
            **doc["request"]["body"]
        )
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
        api_key="sk-ant-test",
        base_url="http://0.0.0.0:11434",
        max_retries=0,
        http_client=anthropic.DefaultHttpxClient(proxy=fixture_proxy.url),
    )
    events = list(client.messages.create(**doc["request"]["payload"]))
    lines = doc["response"]["body"]
    recorded_events = [orjson.loads(ln[len("data: ") :]) for ln in lines if ln.startswith("data: ")]
    assert [e.type for e in events] == [e["type"] for e in recorded_events]
    text = "".join(
        e.delta.text
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )
    assert text == "1, 2, 3, 4, 5"


def test_tavily_tool_record_answers_the_real_http_call(fixture_proxy, llama_suite):
    with _httpx(fixture_proxy) as client:
        r = client.post(
            "https://api.tavily.com/search",
            json={"api_key": "tvly-test-123", "query": "latest Python version 2023"},
        )
    assert r.status_code == 200
    assert r.json() == formats.load(llama_suite / TAVILY_FILE).responses[0].body.value


# -- any-host recordings: the request's own host first -----------------------------------------

LOOPBACK = {"localhost", "127.0.0.1", "0.0.0.0"}


def recorded_model_lists(suite: Path) -> dict[tuple[str, str], tuple[list[str], list[str]]]:
    """From the raw files: (server, port) -> (the URLs a client lists models at, the model ids
    recorded for that server). A client sends ``extra_query`` in the URL; the recorder doubled
    ``/v1``; loopback names are one machine."""
    servers: dict[tuple[str, str], tuple[list[str], list[str]]] = {}
    for path in sorted(suite.rglob("models-*.json")):
        doc = orjson.loads(path.read_bytes())
        req = doc["request"]
        url = req["url"].replace("/v1/v1/", "/v1/")
        query = (req.get("body") or {}).get("extra_query")
        if query:
            url += "?" + urlencode(query)
        parts = urlsplit(url)
        host = "localhost" if parts.hostname in LOOPBACK else parts.hostname
        urls, ids = servers.setdefault((host, str(parts.port or "")), ([], []))
        urls.append(url)
        ids += [item["__data__"]["id"] for item in doc["response"]["body"]]
    return servers


def test_every_model_list_answers_with_its_own_hosts_models(llama_suite, proxies):
    """The corpus holds 110 model lists from 10 servers, all with the same empty request. A GET
    to each recorded URL gets the models recorded for that server, never another server's: its
    one recording as recorded, or the union of its recordings (each model once)."""
    servers = recorded_model_lists(llama_suite)
    assert sum(len(urls) for urls, _ in servers.values()) == 110 and len(servers) == 10
    proxy = proxies(llama_suite, "replay")
    with _httpx(proxy) as client:
        for urls, ids in servers.values():
            for url in sorted(set(urls)):
                got = [m["id"] for m in client.get(url).json()["data"]]
                if len(urls) == 1:
                    assert got == ids, url
                else:
                    assert len(got) == len(set(got)) and set(got) == set(ids), url
        openai_ids = [
            m["id"] for m in client.get("https://api.openai.com/v1/models").json()["data"]
        ]
    assert "gpt-4o" in openai_ids and "text-embedding-3-small" in openai_ids
    assert not [i for i in openai_ids if any(w in i.lower() for w in ("qwen", "llama", "granite"))]
    log = proxy.stop()
    assert "answered from another host" not in log


def _llama_chat(url: str, answer: str) -> dict[str, Any]:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Which host?"}]}
    return {
        "test_id": None,
        "request": {
            "method": "POST",
            "url": url,
            "headers": {},
            "body": body,
            "endpoint": "/v1/chat/completions",
            "model": "gpt-4o",
        },
        "response": {
            "is_streaming": False,
            "body": {
                "__type__": "openai.types.chat.chat_completion.ChatCompletion",
                "__data__": {
                    "id": "c",
                    "object": "chat.completion",
                    "created": 0,
                    "model": "gpt-4o",
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": answer},
                        }
                    ],
                },
            },
        },
    }


def test_a_request_recorded_for_two_hosts_is_answered_from_its_own_hosts(tmp_path, proxies):
    cassettes = tmp_path / "c"
    cassettes.mkdir()
    for name, url, answer in [
        ("a", "https://api.openai.com/v1/v1/chat/completions", "OpenAI"),
        ("b", "http://localhost:8000/v1/v1/chat/completions", "vLLM"),
    ]:
        (cassettes / f"{name}.json").write_bytes(orjson.dumps(_llama_chat(url, answer)))
    summary = tmp_path / "summary.json"
    proxy = proxies(cassettes, "replay", cassette_summary=str(summary))

    def ask(base_url: str) -> str:
        return (
            _openai(proxy, base_url)
            .chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "Which host?"}]
            )
            .choices[0]
            .message.content
        )

    assert ask("https://api.openai.com/v1") == "OpenAI"
    assert ask("http://127.0.0.1:8000/v1") == "vLLM"  # the same local server as localhost
    assert ask("http://localhost:8000/v1") == "vLLM"
    assert ask("https://gateway.example/v1") in ("OpenAI", "vLLM")  # no recording of its own
    log = proxy.stop()
    assert counted(log, "hits", "recorded", "misses", "other_host") == (4, 0, 0, 1)
    [other] = orjson.loads(summary.read_bytes())["other_host"]
    assert other["asked"] == "gateway.example"
    assert other["recorded_for"] in ("api.openai.com", "localhost:8000")
