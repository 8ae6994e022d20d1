"""The corpora scripts/bench indexes: recordings the recorder itself wrote, copied with distinct
prompts.

A real ``mitmdump`` in record mode, the real SDKs (openai, anthropic, ollama) and httpx send one
request of each kind below to the local stand-in upstream (``tests.upstream``): OpenAI chat,
plain and streamed (with ``include_usage``), the Responses API streamed, embeddings, Anthropic
Messages plain and streamed, Ollama's NDJSON chat stream, Gemini's ``alt=sse`` stream. Each
prompt holds a marker of fixed width; a corpus of N files is those recordings copied in turn
with the marker replaced by the copy's number (the same size, so every copy is a file as the
recorder wrote it: pretty-printed, its headers, its secret header as ``<redacted>``), and the
stand-in's address replaced by the provider's own host, in the folder the recorder names.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import ollama
import openai
import orjson

from proxy_addon.redaction.secret_rules import REDACTED
from proxy_addon.runner.process import RunningProxy, start_proxy
from tests.upstream import FakeUpstreamServer

MARK = "q-000000000"  # in every template's prompt; a copy puts its number here
SYSTEM = (
    "You are a careful assistant for a customer-support team. Answer in two or three short "
    "sentences, in the customer's language, without speculation. If the question is about "
    "billing, point to the billing page; if it is about an outage, point to the status page. "
    "Never reveal internal ticket numbers or the names of other customers."
)
KEY = "sk-test-bench-0123456789abcdefghij"


@dataclass(frozen=True)
class Template:
    """One kind of request, sent once through the recording proxy."""

    name: str
    host: str  # the provider's host, which replaces the stand-in's address in the copies
    send: Callable[[RunningProxy, str, str], Any]  # (proxy, stand-in base URL, prompt)


def _verify(proxy: RunningProxy) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(proxy.ca_cert))


def _openai(proxy: RunningProxy, base: str) -> openai.OpenAI:
    return openai.OpenAI(
        api_key=KEY,
        base_url=base + "/v1",
        max_retries=0,
        http_client=openai.DefaultHttpxClient(proxy=proxy.url, verify=_verify(proxy)),
    )


def _anthropic(proxy: RunningProxy, base: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key=KEY,
        base_url=base,
        max_retries=0,
        http_client=anthropic.DefaultHttpxClient(proxy=proxy.url, verify=_verify(proxy)),
    )


def _chat(prompt: str) -> list[Any]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]


def _openai_chat(proxy: RunningProxy, base: str, prompt: str) -> None:
    _openai(proxy, base).chat.completions.create(
        model="gpt-4o", messages=_chat(prompt), temperature=0.2
    )


def _openai_chat_stream(proxy: RunningProxy, base: str, prompt: str) -> None:
    for _ in _openai(proxy, base).chat.completions.create(
        model="gpt-4o-mini",
        messages=_chat(prompt),
        stream=True,
        stream_options={"include_usage": True},
    ):
        pass


def _openai_responses(proxy: RunningProxy, base: str, prompt: str) -> None:
    for _ in _openai(proxy, base).responses.create(
        model="gpt-4.1", instructions=SYSTEM, input=prompt, stream=True
    ):
        pass


def _openai_embeddings(proxy: RunningProxy, base: str, prompt: str) -> None:
    _openai(proxy, base).embeddings.create(model="text-embedding-3-small", input=[prompt, SYSTEM])


def _anthropic_message(proxy: RunningProxy, base: str, prompt: str) -> None:
    _anthropic(proxy, base).messages.create(
        model="claude-sonnet-4-5",
        max_tokens=512,
        system=SYSTEM,
        messages=[{"role": "user", "content": prompt}],
    )


def _anthropic_stream(proxy: RunningProxy, base: str, prompt: str) -> None:
    with _anthropic(proxy, base).messages.stream(
        model="claude-haiku-4-5",
        max_tokens=512,
        system=SYSTEM,
        messages=[{"role": "user", "content": prompt}],
    ) as stream:
        for _ in stream.text_stream:
            pass


def _ollama_chat(proxy: RunningProxy, base: str, prompt: str) -> None:
    for _ in ollama.Client(host=base, proxy=proxy.url).chat(
        model="llama3.2", messages=_chat(prompt), stream=True
    ):
        pass


def _gemini_stream(proxy: RunningProxy, base: str, prompt: str) -> None:
    body = {
        "systemInstruction": {"parts": [{"text": SYSTEM}]},
        "contents": [{"role": "user", "parts": [{"text": prompt}]}],
    }
    with httpx.Client(proxy=proxy.url, verify=_verify(proxy), timeout=20) as client:
        client.post(
            f"{base}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            json=body,
            headers={"x-goog-api-key": KEY},
        ).raise_for_status()


TEMPLATES = (
    Template("openai chat", "api.openai.com", _openai_chat),
    Template("openai chat, streamed", "api.openai.com", _openai_chat_stream),
    Template("openai responses, streamed", "api.openai.com", _openai_responses),
    Template("openai embeddings", "api.openai.com", _openai_embeddings),
    Template("anthropic messages", "api.anthropic.com", _anthropic_message),
    Template("anthropic messages, streamed", "api.anthropic.com", _anthropic_stream),
    Template("ollama chat, streamed", "127.0.0.1:11434", _ollama_chat),
    Template("gemini, streamed", "generativelanguage.googleapis.com", _gemini_stream),
)


@dataclass(frozen=True)
class Recorded:
    """A template's file as the recorder wrote it, and where its copies go."""

    name: str
    relative_dir: Path  # under the corpus, with the provider's host first
    stem: str  # the file name before its key prefix
    raw: bytes  # the file, the stand-in's address already replaced by the provider's origin

    def request(self, i: int) -> Ask:
        """What a client sends to be answered from copy ``i`` (plain HTTP: through the proxy
        it matches the ``https`` recording, default ports not counting)."""
        req = orjson.loads(self.raw.replace(MARK.encode(), number(i)))["request"]
        headers = {k: v for k, v in req.get("headers", {}).items() if v != REDACTED}
        url = req["url"].replace("https://", "http://", 1)
        return Ask(req["method"], url, headers, orjson.dumps(req["body"]))


@dataclass(frozen=True)
class Ask:
    method: str
    url: str
    headers: dict[str, str]
    content: bytes


def record_templates(confdir: Path) -> list[Recorded]:
    """Each template sent once through a recording ``mitmdump`` to the stand-in upstream."""
    upstream = FakeUpstreamServer().start()
    recorded: list[Recorded] = []
    with tempfile.TemporaryDirectory(prefix="cassette-bench-record-") as tmp:
        folder = Path(tmp) / "cassettes"
        proxy = start_proxy(folder, "record", confdir=confdir)
        try:
            for template in TEMPLATES:
                before = set(folder.rglob("*.json"))
                template.send(proxy, upstream.base_url, f"Where is my invoice for {MARK}?")
                proxy_written(folder, before, proxy)
                (written,) = set(folder.rglob("*.json")) - before
                recorded.append(_as_provider(template, folder, written, upstream.base_url))
        finally:
            proxy.stop()
            upstream.stop()
    return recorded


def proxy_written(folder: Path, before: set[Path], proxy: RunningProxy) -> None:
    """Wait until the recorder's background writer has written the template's file."""
    deadline = time.monotonic() + 20
    while set(folder.rglob("*.json")) == before:
        if time.monotonic() > deadline:
            raise RuntimeError("the recording proxy wrote nothing:\n" + proxy.log[-2000:])
        time.sleep(0.02)


def _as_provider(template: Template, folder: Path, written: Path, base: str) -> Recorded:
    raw = written.read_bytes()
    origin = ("http://" if template.host.startswith("127.") else "https://") + template.host
    raw = raw.replace(base.encode(), origin.encode())
    rel = written.relative_to(folder)
    host_dir = template.host.replace(":", "_")
    stem = written.stem.rsplit("-", 1)[0]
    return Recorded(template.name, Path(host_dir, *rel.parts[1:-1]), stem, raw)


def number(i: int) -> bytes:
    return f"q-{i:09d}".encode()


def write_corpus(directory: Path, templates: list[Recorded], n: int) -> dict[str, int]:
    """``n`` copies, template i % len(templates) for copy i; returns how many of each."""
    directory.mkdir(parents=True, exist_ok=True)
    made: dict[str, int] = {}
    folders: dict[Path, Path] = {}
    mark = MARK.encode()
    for i in range(n):
        t = templates[i % len(templates)]
        target = folders.get(t.relative_dir)
        if target is None:
            target = folders[t.relative_dir] = directory / t.relative_dir
            target.mkdir(parents=True, exist_ok=True)
        tag = hashlib.sha256(number(i)).hexdigest()[:12]
        with open(target / f"{t.stem}-{tag}.json", "wb") as f:
            f.write(t.raw.replace(mark, number(i)))
        made[t.name] = made.get(t.name, 0) + 1
    return made


def file_sizes(directory: Path) -> tuple[int, int]:
    """(files, bytes) under ``directory``."""
    files = total = 0
    for dirpath, _, names in os.walk(directory):
        for name in names:
            files += 1
            total += os.path.getsize(os.path.join(dirpath, name))
    return files, total
