"""A small fake LLM provider on 127.0.0.1, plain HTTP or HTTPS with its own certificate.

It speaks the wire formats the real SDKs parse (OpenAI chat / embeddings / models / Responses, SSE
with chunked transfer; a Bedrock event stream of the chunks a test spells) and counts every
request, so a test can prove that a replay made no upstream call. Streams are written in
deliberately odd TCP chunks (events cut in the middle) with a small delay between them, as real
providers do.
"""

from __future__ import annotations

import base64
import datetime
import email.parser
import email.policy
import gzip
import hashlib
import ipaddress
import json
import socket
import ssl
import struct
import threading
import time
import zlib
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
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "upstream-cert.pem", directory / "upstream-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
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
    connections: int = 0  # TCP connections accepted: a replay must make none
    seen: list[Seen] = field(default_factory=list)
    answer_counter: dict[str, int] = field(default_factory=dict)
    event_delay: float = 0.01
    tail_delay: float = 0.0  # pause between the last event and the end of the body
    stream_finished_at: float = 0.0  # time.monotonic() when the last event was written
    # when set, a stream pauses after its first event until the test opens the gate (or 10 s
    # pass); ``gate_opened`` says whether the test did: it had the first event by then
    gate: threading.Event | None = None
    gate_opened: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


# -- the AWS event stream, written from its description ----------------------------------------


def _header(name: str, value: str) -> bytes:
    raw = value.encode()
    return bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(raw)) + raw


def eventstream_message(event_type: str, payload: bytes) -> bytes:
    """One message of a Bedrock event stream, as AWS frames it: prelude (lengths, CRC32), the
    string headers Bedrock sends (its event type, JSON content, an event), payload, CRC32."""
    headers = [(":event-type", event_type), (":content-type", "application/json")]
    head = b"".join(_header(n, v) for n, v in [*headers, (":message-type", "event")])
    prelude = struct.pack(">II", 16 + len(head) + len(payload), len(head))
    start = prelude + struct.pack(">I", zlib.crc32(prelude)) + head + payload
    return start + struct.pack(">I", zlib.crc32(start))


def _chat_chunk(
    cid: str,
    model: str,
    delta: dict[str, Any],
    finish: str | None = None,
    usage: Any = None,
    choices: bool = True,
) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        if choices
        else [],
        **({"usage": usage} if usage is not None else {}),
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # small writes go out at once, as real servers do
    server: FakeUpstreamServer

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    # -- plumbing --------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _encoding(self) -> str:
        """Tests ask for a compressed answer with x-fake-encoding, whatever accept-encoding says
        (the proxy asks for identity; some servers compress anyway)."""
        return self.headers.get("x-fake-encoding", "")

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._bytes(status, json.dumps(obj).encode(), "application/json", headers)

    def _bytes(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        enc = self._encoding()
        if enc:
            body = compress(body, enc)
        self.send_response(status)
        self.send_header("content-type", content_type)
        if enc:
            self.send_header("content-encoding", enc)
        self.send_header("content-length", str(len(body)))
        self.send_header("x-request-id", "req_fake")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _stream(
        self,
        events: list[bytes],
        content_type: str = "text/event-stream",
        cut_after: int | None = None,
        reset: bool = False,
    ) -> None:
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("transfer-encoding", "chunked")
        self.send_header("cache-control", "no-cache")
        encoding = self._encoding()
        if encoding:
            self.send_header("content-encoding", encoding)
            # each event compressed and flushed on its own, so it still streams
            events = compress_stream(events, encoding)
            corrupt = self.headers.get("x-fake-corrupt")  # garble this compressed event
            if corrupt:
                events[int(corrupt)] = bytes(b ^ 0x5A for b in events[int(corrupt)])
        self.end_headers()
        state = self.server.state
        delay = state.event_delay
        for n, raw in enumerate(events):
            if cut_after is not None and n == cut_after:
                # the provider dies mid-stream: no end marker, no terminating chunk
                if reset:
                    return self.reset()
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
            if n == 0 and state.gate is not None:
                state.gate_opened = state.gate.wait(10)
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

    def _multipart(self, body: bytes) -> dict[str, Any]:
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + self.headers["content-type"].encode() + b"\r\n\r\n" + body
        )
        out: dict[str, Any] = {}
        for part in msg.iter_parts():
            payload = part.get_payload(decode=True) or b""
            name = part.get_param("name", header="content-disposition")
            out[name] = (
                hashlib.sha256(payload).hexdigest()[:12]
                if part.get_filename()
                else payload.decode()
            )
        return out

    def reset(self) -> None:
        """Abort the connection with a TCP reset (RST), as a crashed server or a middlebox does."""
        self.close_connection = True
        self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()

    def send_response(self, code: int, message: str | None = None) -> None:
        self.answered = True
        super().send_response(code, message)

    def _handle(self, body: bytes) -> None:
        """Answer as the provider would; a request the fake cannot read (random JSON lacking
        a field it expects) gets the provider's 400, as a real one answers it, not a dropped
        connection."""
        self.answered = False
        try:
            self._dispatch(body)
        except (KeyError, TypeError, IndexError, AttributeError, UnicodeDecodeError) as e:
            if self.answered:
                raise
            self._json(400, {"error": {"message": repr(e), "type": "invalid_request_error"}})

    def _dispatch(self, body: bytes) -> None:
        state = self.server.state
        with state.lock:
            state.hits += 1
            state.seen.append(Seen(self.command, self.path, dict(self.headers.items()), body))
            key = body.decode("utf-8", "replace")
            self.arrival = state.answer_counter[key] = state.answer_counter.get(key, 0) + 1
        delay = self.headers.get("x-fake-delay")  # not part of matching: tests order answers
        if delay:
            time.sleep(float(delay))
        path, _, query = self.path.partition("?")
        ctype = self.headers.get("content-type", "")
        if path == "/oauth/token":
            return self._oauth(body)
        if path == "/echo":
            return self._echo(query, body)
        if ctype.startswith("multipart/form-data"):
            form = self._multipart(body)
            if path.endswith("/audio/transcriptions"):
                return self._json(200, {"text": f"transcript of {form['file']}"})
            return self._json(
                200,
                {
                    "id": f"file-{form['file']}",
                    "object": "file",
                    "bytes": 6,
                    "created_at": 1700000000,
                    "filename": "upload",
                    "purpose": form.get("purpose"),
                    "status": "processed",
                },
            )
        if ctype.startswith("application/x-www-form-urlencoded"):
            from urllib.parse import parse_qsl

            return self._json(200, {"form_fields": sorted(k for k, _ in parse_qsl(body.decode()))})
        try:
            data = json.loads(body) if body else {}
        except (ValueError, UnicodeDecodeError, RecursionError):
            return self._json(
                400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}}
            )
        if not isinstance(data, dict):
            return self._json(
                400,
                {"error": {"message": "body is not an object", "type": "invalid_request_error"}},
            )
        if path.endswith("/audio/speech"):
            audio = b"ID3\x03\x00" + bytes(range(256)) * 8 + data["input"].encode()
            return self._bytes(200, audio, "audio/mpeg")
        if path.endswith("/v1/completions"):
            return self._completions(data)
        if path.endswith("/v1/messages"):
            return self._anthropic(data)
        if path in ("/api/chat", "/api/generate"):
            return self._ollama(path, data)
        if ":generateContent" in path or ":streamGenerateContent" in path:
            return self._gemini(path, query, data)
        if path.endswith("/models") and self.command == "GET":
            return self._json(
                200,
                {
                    "object": "list",
                    "data": [
                        {
                            "id": "gpt-4o",
                            "object": "model",
                            "created": 1700000000,
                            "owned_by": "fake",
                        },
                        {
                            "id": "text-embedding-3-small",
                            "object": "model",
                            "created": 1700000001,
                            "owned_by": "fake",
                        },
                    ],
                },
            )
        if path.endswith("/embeddings"):
            inputs = data["input"] if isinstance(data["input"], list) else [data["input"]]
            return self._json(
                200,
                {
                    "object": "list",
                    "model": data["model"],
                    "data": [
                        {
                            "object": "embedding",
                            "index": i,
                            "embedding": [0.125 * (i + 1), -0.5, 0.25],
                        }
                        for i in range(len(inputs))
                    ],
                    "usage": {"prompt_tokens": 3, "total_tokens": 3},
                },
            )
        if path.endswith("/chat/completions"):
            return self._chat(data)
        if path.endswith("/invoke-with-response-stream"):
            return self._bedrock_chunks(data["chunks"])
        if path.endswith("/responses"):
            return self._responses(data)
        self._json(404, {"error": {"message": f"no route {path}", "type": "not_found"}})

    # -- echoes: what real gateways and debug endpoints do with a caller's secrets -------------

    ECHOED_HEADERS = (
        "authorization",
        "api-key",
        "x-api-key",
        "x-goog-api-key",
        "x-team-token",
        "x-amz-security-token",
    )

    def _deltas(self, text: str) -> list[str]:
        """A streamed answer's pieces: its words, or with x-fake-delta-size pieces of that many
        characters, as providers cut a long token (a key the model repeats) across events."""
        size = int(self.headers.get("x-fake-delta-size") or 0)
        if size:
            return [text[i : i + size] for i in range(0, len(text), size)]
        words = text.split(" ")
        return [w if i == 0 else " " + w for i, w in enumerate(words)]

    def _heard(self) -> list[str]:
        """The caller's credential headers, reflected inside plain strings."""
        return [
            f"{name} said {self.headers[name]}"
            for name in self.ECHOED_HEADERS
            if self.headers.get(name)
        ]

    def _echo(self, query: str, body: bytes) -> None:
        """Reflects the credential headers, the query and the body in a JSON answer."""
        from urllib.parse import parse_qsl

        try:
            sent: Any = json.loads(body) if body else None
        except ValueError:
            sent = body.decode("utf-8", "replace")
        cookie = self.headers.get("x-fake-cookie")  # the session cookie the test asks for
        self._json(
            200,
            {
                "heard": self._heard(),
                "query": [f"{k} was {v}" for k, v in parse_qsl(query)],
                "body": sent,
            },
            {"set-cookie": f"session={cookie}; Path=/; HttpOnly"} if cookie else None,
        )

    def _oauth(self, body: bytes) -> None:
        """An OAuth token endpoint (a refresh, as Google's clients make it): a form in, tokens
        out. The tokens it issues are the ones the test asks for in x-fake-* headers."""
        from urllib.parse import parse_qsl

        form = dict(parse_qsl(body.decode()))
        if form.get("grant_type") != "refresh_token" or not form.get("client_secret"):
            return self._json(400, {"error": "invalid_request"})
        self._json(
            200,
            {
                "access_token": self.headers["x-fake-access"],
                "id_token": self.headers["x-fake-id"],
                "refresh_token": self.headers["x-fake-refresh"],
                "token_type": "Bearer",
                "expires_in": 3599,
                "scope": "openid",
            },
        )

    def _answer(self, data: dict[str, Any]) -> str:
        """A deterministic answer; the N-th identical request gets answer number N (counted
        when it arrived, before any x-fake-delay), and an x-fake-tag is echoed."""
        prompt = data["messages"][-1]["content"] if data.get("messages") else data.get("input")
        tag = self.headers.get("x-fake-tag")
        return f"Answer {self.arrival} to: {prompt}" + (f" [{tag}]" if tag else "")

    def _chat(self, data: dict[str, Any]) -> None:
        model = data.get("model", "gpt-4o")
        if model == "rate-limited":
            return self._json(
                429,
                {
                    "error": {
                        "message": "Rate limit reached",
                        "type": "requests",
                        "code": "rate_limit_exceeded",
                    }
                },
                {
                    "retry-after": "7",
                    "x-ratelimit-remaining-requests": "0",
                    "x-ratelimit-reset-requests": "7s",
                },
            )
        if model == "malformed":
            return self._stream([b"data: {not json\n\n", b"event\x00: ???\n", b"data: [DONE]\n\n"])
        if model == "hang":
            time.sleep(30)  # never answers in time
            return
        if model == "reset":
            return self.reset()  # before any byte of the response
        if model == "big-stream":
            return self._big_stream(int(data.get("max_tokens") or 1000))
        answer = self._answer(data)
        echo = model == "echo-auth"  # a gateway that reflects the caller's credentials
        if echo:
            answer += " (" + "; ".join(self._heard()) + ")"
        cid = "chatcmpl-fake"
        if not data.get("stream"):
            return self._json(
                200,
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": 1700000000,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "logprobs": None,
                            "message": {"role": "assistant", "content": answer},
                        }
                    ],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11},
                    **({"echo_request": data} if echo else {}),
                },
            )
        events: list[bytes] = [b": " + "; ".join(self._heard()).encode() + b"\n\n"] if echo else []
        if data.get("tools"):
            # the arguments the model calls the tool with (x-fake-tool-args: the test's own)
            args = self.headers.get("x-fake-tool-args") or json.dumps(
                {"city": "Paris", "unit": "celsius"}
            )
            events.append(
                self._sse(
                    _chat_chunk(
                        cid,
                        model,
                        {
                            "role": "assistant",
                            "content": None,
                            "tool_calls": [
                                {
                                    "index": 0,
                                    "id": "call_fake",
                                    "type": "function",
                                    "function": {"name": "get_weather", "arguments": ""},
                                }
                            ],
                        },
                    )
                )
            )
            for i in range(0, len(args), 7):
                events.append(
                    self._sse(
                        _chat_chunk(
                            cid,
                            model,
                            {
                                "tool_calls": [
                                    {"index": 0, "function": {"arguments": args[i : i + 7]}}
                                ]
                            },
                        )
                    )
                )
            events.append(self._sse(_chat_chunk(cid, model, {}, "tool_calls")))
        else:
            events.append(self._sse(_chat_chunk(cid, model, {"role": "assistant", "content": ""})))
            for piece in self._deltas(answer):
                events.append(self._sse(_chat_chunk(cid, model, {"content": piece})))
            events.append(self._sse(_chat_chunk(cid, model, {}, "stop")))
        if (data.get("stream_options") or {}).get("include_usage"):
            events.append(
                self._sse(
                    _chat_chunk(
                        cid,
                        model,
                        {},
                        usage={"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11},
                        choices=False,
                    )
                )
            )
        events.append(b"data: [DONE]\n\n")
        self._stream(
            events,
            cut_after=3 if model in ("cut-off", "reset-mid-stream") else None,
            reset=model == "reset-mid-stream",
        )

    def _responses(self, data: dict[str, Any]) -> None:
        """The Responses API, streamed (``"stream": true``) or as one JSON answer, as the
        openai SDK, the OpenAI Agents SDK and pydantic-ai's ``openai:`` models call it."""
        answer = f"Responses answer to: {_last_user_text(data.get('input'))}"
        rid = "resp_fake"
        usage = {
            "input_tokens": 5,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 6,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 11,
        }
        base = {
            "id": rid,
            "object": "response",
            "created_at": 1700000000,
            "model": data["model"],
            "output": [],
            "status": "in_progress",
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
        }
        seq = iter(range(1000))
        events = [
            self._sse(
                {"type": "response.created", "sequence_number": next(seq), "response": base},
                "response.created",
            )
        ]
        item = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        events.append(
            self._sse(
                {
                    "type": "response.output_item.added",
                    "sequence_number": next(seq),
                    "output_index": 0,
                    "item": item,
                },
                "response.output_item.added",
            )
        )
        for w in answer.split(" "):
            events.append(
                self._sse(
                    {
                        "type": "response.output_text.delta",
                        "sequence_number": next(seq),
                        "item_id": "msg_fake",
                        "output_index": 0,
                        "content_index": 0,
                        "delta": w + " ",
                        "logprobs": [],
                    },
                    "response.output_text.delta",
                )
            )
        done = dict(
            base,
            status="completed",
            usage=usage,
            output=[
                dict(
                    item,
                    status="completed",
                    content=[
                        {"type": "output_text", "text": answer, "annotations": [], "logprobs": []}
                    ],
                )
            ],
        )
        if not data.get("stream"):
            return self._json(200, done)
        events.append(
            self._sse(
                {"type": "response.completed", "sequence_number": next(seq), "response": done},
                "response.completed",
            )
        )
        self._stream(events)

    def _big_stream(self, events: int) -> None:
        """A long stream (about 1 kB an event), written without pauses."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        filler = "x" * 900
        batch = []
        for i in range(events):
            batch.append(
                self._sse(_chat_chunk("chatcmpl-big", "big", {"content": f"{i} {filler}"}))
            )
            if len(batch) == 64 or i == events - 1:
                data = b"".join(batch)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                batch = []
        done = b"data: [DONE]\n\n"
        self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
        self.wfile.flush()

    # -- more providers -----------------------------------------------------------------------

    def _bedrock_chunks(self, chunks: list[str]) -> None:
        """Bedrock's InvokeModelWithResponseStream as the test spells it: each of ``chunks`` is
        the model's JSON as text, sent byte for byte (its spacing and escapes) in base64, in an
        event stream's ``chunk`` message."""
        events = [
            eventstream_message(
                "chunk",
                json.dumps(
                    {"bytes": base64.b64encode(text.encode()).decode(), "p": "abcdef"[: i % 6]},
                    separators=(",", ":"),
                ).encode(),
            )
            for i, text in enumerate(chunks)
        ]
        self._stream(events, "application/vnd.amazon.eventstream")

    def _completions(self, data: dict[str, Any]) -> None:
        words = f"completion of {data['prompt']}".split(" ")
        base = {
            "id": "cmpl-fake",
            "object": "text_completion",
            "created": 1700000000,
            "model": data["model"],
            "system_fingerprint": None,
        }
        if not data.get("stream"):
            return self._json(
                200,
                dict(
                    base,
                    choices=[
                        {
                            "index": 0,
                            "text": " ".join(words),
                            "finish_reason": "stop",
                            "logprobs": None,
                        }
                    ],
                    usage={"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5},
                ),
            )
        events = [
            self._sse(
                dict(
                    base,
                    choices=[
                        {
                            "index": 0,
                            "text": (" " if i else "") + w,
                            "finish_reason": None,
                            "logprobs": None,
                        }
                    ],
                )
            )
            for i, w in enumerate(words)
        ]
        events.append(
            self._sse(
                dict(
                    base,
                    choices=[{"index": 0, "text": "", "finish_reason": "stop", "logprobs": None}],
                )
            )
        )
        events.append(b"data: [DONE]\n\n")
        self._stream(events)

    def _anthropic(self, data: dict[str, Any]) -> None:
        prompt = data["messages"][-1]["content"]
        text = f"Claude says: {prompt}"
        message = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": data["model"],
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 9, "output_tokens": 1},
        }
        if not data.get("stream"):
            return self._json(
                200,
                dict(
                    message,
                    content=[{"type": "text", "text": text}],
                    stop_reason="end_turn",
                    usage={"input_tokens": 9, "output_tokens": 4},
                ),
            )
        events = [
            self._sse({"type": "message_start", "message": message}, "message_start"),
            self._sse(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
                "content_block_start",
            ),
            self._sse({"type": "ping"}, "ping"),
        ]
        for piece in self._deltas(text):
            events.append(
                self._sse(
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": piece},
                    },
                    "content_block_delta",
                )
            )
        events += [
            self._sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
            self._sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": 4},
                },
                "message_delta",
            ),
            self._sse({"type": "message_stop"}, "message_stop"),
        ]
        self._stream(events)

    def _ollama(self, path: str, data: dict[str, Any]) -> None:
        chat = path == "/api/chat"
        prompt = data["messages"][-1]["content"] if chat else data["prompt"]
        words = f"Llama says {prompt}".split(" ")
        base = {"model": data["model"], "created_at": "2026-11-26T00:00:00Z"}

        def piece(text: str, done: bool) -> dict[str, Any]:
            body = dict(base, done=done)
            if chat:
                body["message"] = {"role": "assistant", "content": text}
            else:
                body["response"] = text
            if done:
                body.update(done_reason="stop", prompt_eval_count=3, eval_count=len(words))
            return body

        if data.get("stream") is False:
            return self._json(200, piece(" ".join(words), True))
        lines = [
            json.dumps(piece((" " if i else "") + w, False)).encode() + b"\n"
            for i, w in enumerate(words)
        ]
        lines.append(json.dumps(piece("", True)).encode() + b"\n")
        self._stream(lines, "application/x-ndjson")

    def _gemini(self, path: str, query: str, data: dict[str, Any]) -> None:
        prompt = data["contents"][-1]["parts"][0]["text"]
        words = f"Gemini says {prompt}".split(" ")
        chunks = [
            {
                "candidates": [
                    {
                        "content": {"role": "model", "parts": [{"text": (" " if i else "") + w}]},
                        "index": 0,
                    }
                ],
                "modelVersion": "gemini-test",
            }
            for i, w in enumerate(words)
        ]
        chunks[-1]["candidates"][0]["finishReason"] = "STOP"
        chunks[-1]["usageMetadata"] = {
            "promptTokenCount": 2,
            "candidatesTokenCount": 4,
            "totalTokenCount": 6,
        }
        if ":generateContent" in path:
            whole = {
                "candidates": [
                    {
                        "content": {"role": "model", "parts": [{"text": " ".join(words)}]},
                        "finishReason": "STOP",
                        "index": 0,
                    }
                ]
            }
            return self._json(200, whole)
        if "alt=sse" in query:
            return self._stream([b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks])
        # without alt=sse: one JSON array, written progressively
        parts = [b"[" + json.dumps(chunks[0]).encode()]
        parts += [b",\r\n" + json.dumps(c).encode() for c in chunks[1:]]
        parts.append(b"]")
        self._stream(parts, "application/json")


def read_big_stream(proxy_url: str, upstream_base: str, events: int = 50_000) -> int:
    """Ask the fake upstream for its long stream (about 1 kB an event) through a proxy and read
    it to the end; returns how many bytes arrived."""
    import httpx

    received = 0
    with (
        httpx.Client(proxy=proxy_url, timeout=120) as client,
        client.stream(
            "POST",
            upstream_base + "/v1/chat/completions",
            json={"model": "big-stream", "stream": True, "max_tokens": events, "messages": []},
        ) as r,
    ):
        for chunk in r.iter_bytes():
            received += len(chunk)
    return received


def _zstd():  # type: ignore[no-untyped-def]
    try:
        from compression import zstd  # type: ignore[import-not-found]
    except ImportError:
        from backports import zstd  # type: ignore[import-not-found,no-redef]
    return zstd


def compress_stream(events: list[bytes], encoding: str) -> list[bytes]:
    """Each event compressed and flushed on its own, as a streaming server does, so every
    event can be decoded as soon as it arrives; the last item ends the compressed stream."""
    if encoding in ("gzip", "deflate"):
        z = zlib.compressobj(wbits=16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
        return [z.compress(e) + z.flush(zlib.Z_SYNC_FLUSH) for e in events] + [z.flush()]
    if encoding == "br":
        import brotli

        b = brotli.Compressor()
        return [b.process(e) + b.flush() for e in events] + [b.finish()]
    if encoding == "zstd":
        zstd = _zstd()
        c = zstd.ZstdCompressor()
        return [c.compress(e, c.FLUSH_BLOCK) for e in events] + [c.flush(c.FLUSH_FRAME)]
    raise ValueError(encoding)


def compress(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.compress(body)
    if encoding == "deflate":
        return zlib.compress(body)
    if encoding == "br":
        import brotli

        return brotli.compress(body)
    if encoding == "zstd":
        return _zstd().compress(body)
    raise ValueError(encoding)


class PortWatch:
    """Holds a stopped stand-in's port: accepts and counts TCP connections, answers nothing."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_server(("127.0.0.1", port))
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


class FakeUpstreamServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # 64 concurrent clients must not overflow the listen backlog
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

    def get_request(self):  # type: ignore[no-untyped-def]
        conn = super().get_request()
        with self.state.lock:
            self.state.connections += 1
        return conn

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.server_address[1]}"

    def start(self) -> FakeUpstreamServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def _last_user_text(value: Any) -> Any:
    """What the user said last in a Responses API ``input``: the string itself, or the text of
    the last user message in a list of items (content as a string or as input_text parts)."""
    if not isinstance(value, list):
        return value
    for item in reversed(value):
        if isinstance(item, dict) and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return content
    return value
