"""Every provider's streaming format and every kind of body, recorded then replayed through the
real client (openai, anthropic, ollama SDKs; httpx for Gemini), against a local upstream."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import ollama
import openai
import orjson
import pytest

from proxy_addon import formats, model
from proxy_addon.bodies.reassemble import reassemble
from proxy_addon.store.layout import iter_cassette_files
from tests.conftest import FAKE_KEY, counted, openai_client

SECRET = "sk-test-provider-secret-0042"


def record_and_replay(
    tmp_path: Path, upstream, proxies, call: Callable[[Any], Any], **options: str
) -> tuple[Any, Any, list[model.Recording]]:
    """Run ``call(proxy)`` recording, then replaying; the replay must not reach the upstream."""
    cassettes = tmp_path / "cassettes"
    rec = proxies(cassettes, "record", **options)
    recorded = call(rec)
    rec.stop()
    hits = upstream.state.hits
    files = list(iter_cassette_files(cassettes))
    on_disk = b"".join(f.read_bytes() for f in files)
    assert SECRET.encode() not in on_disk and FAKE_KEY.encode() not in on_disk
    replay = proxies(cassettes, "replay", **options)
    replayed = call(replay)
    log = replay.stop()
    assert upstream.state.hits == hits, "the replay reached the upstream"
    assert counted(log, "misses") == (0,)
    return recorded, replayed, [formats.load(f) for f in files]


def httpx_client(proxy) -> httpx.Client:
    return httpx.Client(
        proxy=proxy.url, timeout=20, verify=ssl.create_default_context(cafile=str(proxy.ca_cert))
    )


def test_legacy_completions_streamed_and_not(tmp_path, upstream, proxies):
    def call(proxy):
        client = openai_client(proxy, upstream)
        whole = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="say hi")
        chunks = list(
            client.completions.create(model="gpt-3.5-turbo-instruct", prompt="say hi", stream=True)
        )
        return whole.model_dump(), [c.model_dump() for c in chunks]

    recorded, replayed, recs = record_and_replay(tmp_path, upstream, proxies, call)
    assert recorded == replayed
    assert "".join(c["choices"][0]["text"] for c in recorded[1]) == "completion of say hi"
    stream = next(r for r in recs if r.responses[0].stream).responses[0]
    assert reassemble(stream).text == "completion of say hi"


def test_anthropic_messages_streamed_and_not(tmp_path, upstream, proxies):
    def call(proxy):
        client = anthropic.Anthropic(
            api_key=SECRET,
            base_url=upstream.base_url,
            max_retries=0,
            default_headers={"x-api-key": SECRET},  # the header Anthropic's API documents
            http_client=anthropic.DefaultHttpxClient(
                proxy=proxy.url, verify=ssl.create_default_context(cafile=str(proxy.ca_cert))
            ),
        )
        msgs = [{"role": "user", "content": "hello"}]
        whole = client.messages.create(model="claude-test", max_tokens=20, messages=msgs)
        events = list(
            client.messages.create(model="claude-test", max_tokens=20, messages=msgs, stream=True)
        )
        return whole.model_dump(), [e.model_dump() for e in events]

    recorded, replayed, recs = record_and_replay(tmp_path, upstream, proxies, call)
    assert recorded == replayed
    streamed = next(r for r in recs if r.responses[0].stream)
    assert streamed.request.headers["x-api-key"] == "<redacted>"
    assert streamed.request.headers["authorization"] == "<redacted>"
    events = streamed.responses[0].stream.events
    # the SDK hides ping events; the cassette keeps them, so the replay sends them too
    assert [e.event for e in events][:3] == ["message_start", "content_block_start", "ping"]
    assert reassemble(streamed.responses[0]).text == "Claude says: hello"


def test_ollama_chat_and_generate_ndjson_and_plain(tmp_path, http_upstream, proxies):
    """Ollama serves plain HTTP, so only the plain upstream."""
    upstream = http_upstream

    def call(proxy):
        client = ollama.Client(host=upstream.base_url, proxy=proxy.url)
        chat = [
            c.model_dump()
            for c in client.chat(
                model="llama3.2", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        ]
        gen = [c.model_dump() for c in client.generate(model="llama3.2", prompt="why", stream=True)]
        plain = client.chat(
            model="llama3.2", messages=[{"role": "user", "content": "hi"}], stream=False
        ).model_dump()
        return chat, gen, plain

    recorded, replayed, recs = record_and_replay(tmp_path, upstream, proxies, call)
    assert recorded == replayed
    assert "".join(c["message"]["content"] for c in recorded[0]) == "Llama says hi"
    assert recorded[1][-1]["done"] is True
    ndjson = [r for r in recs if r.responses[0].stream]
    assert {r.responses[0].stream.format for r in ndjson} == {"ndjson"}
    assert all(r.responses[0].stream.complete for r in ndjson)
    assert (
        reassemble(next(r for r in ndjson if "chat" in r.request.url).responses[0]).text
        == "Llama says hi"
    )


def test_gemini_sse_json_array_and_keys_never_on_disk(tmp_path, upstream, proxies):
    body = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}
    base = upstream.base_url + "/v1beta/models/gemini-test"

    def call(proxy):
        with httpx_client(proxy) as client:
            sse = client.post(f"{base}:streamGenerateContent?alt=sse&key={SECRET}", json=body)
            array = client.post(
                f"{base}:streamGenerateContent", json=body, headers={"x-goog-api-key": SECRET}
            )
            whole = client.post(f"{base}:generateContent?key={SECRET}", json=body)
        return (
            [line for line in sse.text.splitlines() if line.startswith("data:")],
            array.json(),
            whole.json(),
            array.headers["content-type"],
        )

    recorded, replayed, recs = record_and_replay(tmp_path, upstream, proxies, call)
    assert [orjson.loads(ln[5:]) for ln in recorded[0]] == [
        orjson.loads(ln[5:]) for ln in replayed[0]
    ]
    assert recorded[1:] == replayed[1:]
    assert (
        "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in recorded[1])
        == "Gemini says hello"
    )
    by_url = {r.request.url.split("gemini-test")[1]: r for r in recs}
    assert ":streamGenerateContent?alt=sse&key=<redacted>" in by_url
    array = by_url[":streamGenerateContent"].responses[0]
    assert array.body.kind == "json" and len(array.body.value) == 3  # stored parsed, readable
    assert by_url[":streamGenerateContent"].request.headers["x-goog-api-key"] == "<redacted>"
    assert reassemble(array).text == "Gemini says hello"


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
def test_compressed_bodies_are_stored_decoded_and_replayed_right(
    tmp_path, http_upstream, proxies, encoding
):
    def call(proxy):
        client = openai.OpenAI(
            api_key=FAKE_KEY,
            base_url=http_upstream.base_url + "/v1",
            max_retries=0,
            default_headers={"x-fake-encoding": encoding},
            http_client=openai.DefaultHttpxClient(proxy=proxy.url),
        )
        return client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "zip"}]
        ).model_dump()

    recorded, replayed, [rec] = record_and_replay(tmp_path, http_upstream, proxies, call)
    assert recorded == replayed
    resp = rec.responses[0]
    assert (
        resp.body.kind == "json"
        and resp.body.value["choices"][0]["message"]["content"] == "Answer 1 to: zip"
    )
    assert not {"content-encoding", "content-length"} & {k.lower() for k, _ in resp.headers}


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
def test_compressed_stream_recorded_readable_and_replayed(
    tmp_path, http_upstream, proxies, encoding
):
    """The upstream compresses the stream and flushes after each event, as streaming servers
    do: the proxy decodes it as it arrives, stores readable events, replays it uncompressed."""

    def call(proxy):
        client = openai.OpenAI(
            api_key=FAKE_KEY,
            base_url=http_upstream.base_url + "/v1",
            max_retries=0,
            default_headers={"x-fake-encoding": encoding},
            http_client=openai.DefaultHttpxClient(proxy=proxy.url),
        )
        return [
            c.model_dump()
            for c in client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "zipped stream"}], stream=True
            )
        ]

    recorded, replayed, [rec] = record_and_replay(tmp_path, http_upstream, proxies, call)
    assert recorded == replayed and len(recorded) > 3
    stream = rec.responses[0].stream
    assert stream.complete and stream.events[-1].data == "[DONE]"
    assert reassemble(rec.responses[0]).text == "Answer 1 to: zipped stream"


def test_binary_audio_is_base64_and_byte_exact(tmp_path, upstream, proxies):
    def call(proxy):
        client = openai_client(proxy, upstream)
        return client.audio.speech.create(model="tts-1", voice="alloy", input="hello").content

    recorded, replayed, [rec] = record_and_replay(tmp_path, upstream, proxies, call)
    assert recorded == replayed and b"\x00" in recorded
    assert rec.responses[0].body.kind == "base64"
    assert rec.responses[0].body.to_bytes() == recorded


def test_multipart_uploads_match_on_fields_and_file_hashes(tmp_path, upstream, proxies):
    audio = b"RIFF\x00\x01fake-wav" * 10

    def call(proxy):
        client = openai_client(proxy, upstream)
        text = client.audio.transcriptions.create(
            model="whisper-1", file=("a.wav", audio, "audio/wav")
        ).text
        upload = client.files.create(
            file=("notes.jsonl", b'{"a": 1}\n', "application/jsonl"), purpose="assistants"
        )
        return text, upload.id

    recorded, replayed, recs = record_and_replay(tmp_path, upstream, proxies, call)
    assert recorded == replayed  # new random boundaries on replay, same match
    body = next(r for r in recs if "transcriptions" in r.request.url).request.body
    assert body.kind == "multipart"
    file_part = next(p for p in body.value if p["name"] == "file")
    assert file_part["filename"] == "a.wav" and file_part["size"] == len(audio)


def test_upstream_cut_stream_is_recorded_incomplete_and_replayed_as_the_same_cut(
    tmp_path, http_upstream, proxies
):
    def call(proxy):
        client = openai_client(proxy, http_upstream)
        got: list[Any] = []
        with pytest.raises(openai.APIConnectionError) as err:
            for chunk in client.chat.completions.create(
                model="cut-off", messages=[{"role": "user", "content": "x"}], stream=True
            ):
                got.append(chunk.model_dump())
        return got, type(err.value).__name__

    recorded, replayed, [rec] = record_and_replay(tmp_path, http_upstream, proxies, call)
    assert recorded == replayed
    assert len(recorded[0]) == 3
    stream = rec.responses[0].stream
    assert stream is not None and not stream.complete and len(stream.events) == 3
