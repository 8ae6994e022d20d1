"""A small fake LLM provider on 127.0.0.1, plain HTTP or HTTPS with its own certificate.

It speaks the wire formats the real SDKs parse (OpenAI chat / embeddings / models / Responses,
SSE with chunked transfer) and counts every request, so a test can prove that a replay made no
upstream call. Streams are written in deliberately odd TCP chunks (events cut in the middle) with
a small delay between them, as real providers do.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 / localhost (the upstream's own, not mitmproxy's)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-upstream")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "upstream-cert.pem", directory / "upstream-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class UpstreamState:
    hits: int = 0
    seen: list[Seen] = field(default_factory=list)
    answer_counter: dict[str, int] = field(default_factory=dict)
    event_delay: float = 0.01
    tail_delay: float = 0.0  # pause between the last event and the end of the body
    stream_finished_at: float = 0.0  # time.monotonic() when the last event was written
    lock: threading.Lock = field(default_factory=threading.Lock)


def _chat_chunk(cid: str, model: str, delta: dict[str, Any], finish: str | None = None,
                usage: Any = None, choices: bool = True) -> dict[str, Any]:
    return {
        "id": cid, "object": "chat.completion.chunk", "created": 1700000000, "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        if choices else [],
        **({"usage": usage} if usage is not None else {}),
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "FakeUpstreamServer"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    # -- plumbing --------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.send_header("x-request-id", "req_fake")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, events: list[bytes], content_type: str = "text/event-stream",
                cut_after: int | None = None) -> None:
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("transfer-encoding", "chunked")
        self.send_header("cache-control", "no-cache")
        self.end_headers()
        state = self.server.state
        delay = state.event_delay
        for n, raw in enumerate(events):
            if cut_after is not None and n == cut_after:
                # the provider dies mid-stream: no end marker, no terminating chunk
                self.close_connection = True
                self.connection.shutdown(2)
                return
            # cut each event in two TCP writes, in the middle, as real servers often do
            cut = max(1, len(raw) // 2)
            for part in (raw[:cut], raw[cut:]):
                if part:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                    self.wfile.flush()
            if n == len(events) - 1:
                state.stream_finished_at = time.monotonic()
            time.sleep(delay)
        if state.tail_delay:
            time.sleep(state.tail_delay)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    @staticmethod
    def _sse(obj: Any, event: str | None = None) -> bytes:
        data = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
        return ((f"event: {event}\n" if event else "") + f"data: {data}\n\n").encode()

    # -- routes ----------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._handle(b"")

    def do_POST(self) -> None:
        self._handle(self._read_body())

    def _handle(self, body: bytes) -> None:
        state = self.server.state
        with state.lock:
            state.hits += 1
            state.seen.append(Seen(self.command, self.path, dict(self.headers.items()), body))
        path = self.path.split("?", 1)[0]
        data = json.loads(body) if body else {}
        if path.endswith("/models") and self.command == "GET":
            return self._json(200, {"object": "list", "data": [
                {"id": "gpt-4o", "object": "model", "created": 1700000000, "owned_by": "fake"},
                {"id": "text-embedding-3-small", "object": "model", "created": 1700000001,
                 "owned_by": "fake"}]})
        if path.endswith("/embeddings"):
            inputs = data["input"] if isinstance(data["input"], list) else [data["input"]]
            return self._json(200, {"object": "list", "model": data["model"], "data": [
                {"object": "embedding", "index": i, "embedding": [0.125 * (i + 1), -0.5, 0.25]}
                for i in range(len(inputs))], "usage": {"prompt_tokens": 3, "total_tokens": 3}})
        if path.endswith("/chat/completions"):
            return self._chat(data, body)
        if path.endswith("/responses"):
            return self._responses(data)
        self._json(404, {"error": {"message": f"no route {path}", "type": "not_found"}})

    def _answer(self, data: dict[str, Any], body: bytes) -> str:
        """A deterministic answer; the N-th identical request gets answer number N."""
        state = self.server.state
        key = body.decode("utf-8", "replace")
        with state.lock:
            n = state.answer_counter.get(key, 0) + 1
            state.answer_counter[key] = n
        prompt = data["messages"][-1]["content"] if data.get("messages") else data.get("input")
        return f"Answer {n} to: {prompt}"

    def _chat(self, data: dict[str, Any], body: bytes) -> None:
        model = data.get("model", "gpt-4o")
        if model == "rate-limited":
            return self._json(429, {"error": {"message": "Rate limit reached", "type": "requests",
                                              "code": "rate_limit_exceeded"}},
                              {"retry-after": "7", "x-ratelimit-remaining-requests": "0",
                               "x-ratelimit-reset-requests": "7s"})
        answer = self._answer(data, body)
        cid = "chatcmpl-fake"
        if not data.get("stream"):
            return self._json(200, {
                "id": cid, "object": "chat.completion", "created": 1700000000, "model": model,
                "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                             "message": {"role": "assistant", "content": answer}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}})
        events: list[bytes] = []
        if data.get("tools"):
            args = json.dumps({"city": "Paris", "unit": "celsius"})
            events.append(self._sse(_chat_chunk(cid, model, {
                "role": "assistant", "content": None, "tool_calls": [
                    {"index": 0, "id": "call_fake", "type": "function",
                     "function": {"name": "get_weather", "arguments": ""}}]})))
            for i in range(0, len(args), 7):
                events.append(self._sse(_chat_chunk(cid, model, {"tool_calls": [
                    {"index": 0, "function": {"arguments": args[i:i + 7]}}]})))
            events.append(self._sse(_chat_chunk(cid, model, {}, "tool_calls")))
        else:
            events.append(self._sse(_chat_chunk(cid, model, {"role": "assistant", "content": ""})))
            words = answer.split(" ")
            for i, w in enumerate(words):
                piece = w if i == 0 else " " + w
                events.append(self._sse(_chat_chunk(cid, model, {"content": piece})))
            events.append(self._sse(_chat_chunk(cid, model, {}, "stop")))
        if (data.get("stream_options") or {}).get("include_usage"):
            events.append(self._sse(_chat_chunk(cid, model, {}, usage={
                "prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}, choices=False)))
        events.append(b"data: [DONE]\n\n")
        self._stream(events, cut_after=3 if model == "cut-off" else None)

    def _responses(self, data: dict[str, Any]) -> None:
        answer = f"Responses answer to: {data.get('input')}"
        rid = "resp_fake"
        base = {"id": rid, "object": "response", "created_at": 1700000000, "model": data["model"],
                "output": [], "status": "in_progress", "parallel_tool_calls": True,
                "tool_choice": "auto", "tools": []}
        seq = iter(range(1000))
        events = [self._sse({"type": "response.created", "sequence_number": next(seq),
                             "response": base}, "response.created")]
        item = {"id": "msg_fake", "type": "message", "role": "assistant", "status": "in_progress",
                "content": []}
        events.append(self._sse({"type": "response.output_item.added", "sequence_number": next(seq),
                                 "output_index": 0, "item": item}, "response.output_item.added"))
        for w in answer.split(" "):
            events.append(self._sse({"type": "response.output_text.delta",
                                     "sequence_number": next(seq), "item_id": "msg_fake",
                                     "output_index": 0, "content_index": 0, "delta": w + " ",
                                     "logprobs": []}, "response.output_text.delta"))
        done = dict(base, status="completed", output=[dict(item, status="completed", content=[
            {"type": "output_text", "text": answer, "annotations": [], "logprobs": []}])])
        events.append(self._sse({"type": "response.completed", "sequence_number": next(seq),
                                 "response": done}, "response.completed"))
        self._stream(events)


class FakeUpstreamServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.state = UpstreamState()
        self.tls = tls
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            self.socket = ctx.wrap_socket(self.socket, server_side=True)
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.server_address[1]}"

    def start(self) -> "FakeUpstreamServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
