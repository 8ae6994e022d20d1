"""A stand-in for the cloud providers on 127.0.0.1 (TLS), as the real SDKs see them through the
proxy: AWS Bedrock Runtime (Converse, ConverseStream, InvokeModel, InvokeModelWithResponseStream
for Anthropic, Meta Llama, Amazon Titan and Nova models), Vertex AI (Gemini, and Anthropic's
rawPredict / streamRawPredict), Azure OpenAI (deployments, api-key or Entra bearer), and the
token endpoints they use (Google OAuth, Entra ID's discovery and token).

Written from the services' models and the SDKs' sources (research notes of 2026-12-03), with its
own event-stream encoder (`tests/upstream.py`), independent of the proxy's. It checks what a real
service checks where a recording proxy could break it: every SigV4 signature (recomputed with
botocore from the fake secret key; the proxy must not change a signed header), and that each bearer
token is one it issued. Every answer is made from the prompt, so a test can tell answers apart; the
SHA-256 of every body sent is kept, so a test can compare a replay's bytes with them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.fake_keys import rep
from tests.upstream import FakeUpstreamServer, Handler, eventstream_message

# The fake credentials the stand-in knows (as AWS, Google and Entra know a caller's), built at
# run time (tests/fake_keys.py) so that no file holds a string a secret scanner would flag.
AWS_SECRET = rep("fakeSecretKey/ForTheStandIn+", 40)
GOOGLE_TOKEN = "ya29." + rep("standin0ISSUED_google-token", 60)
ENTRA_TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0." + "eyJzdGFuZGluIjoiZW50cmEifQ.standin"
AZURE_KEY = rep("0123456789abcdef", 32)  # an Azure OpenAI key: 32 hex, no known shape


# -- the AWS event stream, written from its description ----------------------------------------


def bedrock_event(name: str, payload: dict[str, Any]) -> bytes:
    return eventstream_message(name, json.dumps(payload, separators=(",", ":")).encode())


def chunk(model_json: dict[str, Any], n: int) -> bytes:
    """An InvokeModelWithResponseStream chunk: the model's JSON in base64, and the random-length
    padding ``p`` real chunks carry."""
    raw = json.dumps(model_json, separators=(",", ":")).encode()
    return bedrock_event("chunk", {"bytes": base64.b64encode(raw).decode(), "p": "abcdefghij"[:n]})


def words(text: str) -> list[str]:
    parts = text.split(" ")
    return [p if i == 0 else " " + p for i, p in enumerate(parts)]


METRICS = {"inputTokenCount": 9, "outputTokenCount": 5, "invocationLatency": 321}


def model_chunks(model: str, text: str) -> list[dict[str, Any]]:
    """The chunks of a model's stream, each family in its own shape."""
    pieces = words(text)
    if "llama" in model:
        out = [{"generation": w, "generation_token_count": i + 1} for i, w in enumerate(pieces)]
        return [*out, {"generation": "", "stop_reason": "stop", METRICS_KEY: METRICS}]
    if "titan" in model:
        out = [{"outputText": w, "index": 0} for w in pieces]
        out[-1].update(completionReason="FINISH", **{METRICS_KEY: METRICS})
        return out
    if "nova" in model:
        deltas = [
            {"contentBlockDelta": {"delta": {"text": w}, "contentBlockIndex": 0}} for w in pieces
        ]
        return [
            {"messageStart": {"role": "assistant"}},
            *deltas,
            {"contentBlockStop": {"contentBlockIndex": 0}},
            {"messageStop": {"stopReason": "end_turn"}},
            {"metadata": {"usage": {"inputTokens": 9, "outputTokens": 5}}, METRICS_KEY: METRICS},
        ]
    return anthropic_events(text, "msg_bdrk_standin", {METRICS_KEY: METRICS})


METRICS_KEY = "amazon-bedrock-invocationMetrics"


def anthropic_message(text: str, message_id: str) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": "claude-standin",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 9, "output_tokens": 5},
    }


def anthropic_events(text: str, message_id: str, last: dict[str, Any]) -> list[dict[str, Any]]:
    start = dict(anthropic_message("", message_id), content=[], stop_reason=None)
    return [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        *(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}}
            for w in words(text)
        ),
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 5},
        },
        {"type": "message_stop", **last},
    ]


def invoke_body(model: str, text: str) -> dict[str, Any]:
    if "llama" in model:
        return {
            "generation": text,
            "prompt_token_count": 9,
            "generation_token_count": 5,
            "stop_reason": "stop",
        }
    if "titan" in model:
        return {
            "inputTextTokenCount": 9,
            "results": [{"tokenCount": 5, "outputText": text, "completionReason": "FINISH"}],
        }
    if "nova" in model:
        return {
            "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": 9, "outputTokens": 5, "totalTokens": 14},
        }
    return anthropic_message(text, "msg_bdrk_standin")


def prompt_of(data: dict[str, Any]) -> str:
    """The user's words in any of the request shapes below."""
    if "prompt" in data:  # Llama
        return str(data["prompt"])
    if "inputText" in data:  # Titan
        return str(data["inputText"])
    if "contents" in data:  # Gemini
        return str(data["contents"][-1]["parts"][0]["text"])
    content = data["messages"][-1]["content"]  # Converse, Nova, Anthropic, OpenAI
    if isinstance(content, list):
        return str(content[0]["text"])
    return str(content)


# -- SigV4, as AWS checks it ----------------------------------------------------------------------

_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=([^/]+)/[^/]+/([^/]+)/([^/]+)/aws4_request, "
    r"SignedHeaders=([^,]+), Signature=([0-9a-f]{64})"
)


def sigv4_problem(
    method: str, host: str, raw_path: str, headers: dict[str, str], body: bytes
) -> str | None:
    """Why a request's SigV4 signature does not match, recomputed from the fake secret key by
    botocore over the headers it says it signed; None when it matches."""
    found = _AUTH.fullmatch(headers.get("authorization", ""))
    if found is None:
        return f"no SigV4 Authorization header: {headers.get('authorization')!r}"
    key_id, region, service, signed, signature = found.groups()
    names = signed.split(";")
    request = AWSRequest(
        method=method,
        url=f"https://{host}{raw_path}",
        data=body,
        headers={n: headers[n] for n in names if n in headers},
    )
    missing = [n for n in names if n not in headers]
    if missing:
        return f"signed headers missing from the request: {missing}"
    request.context["timestamp"] = headers["x-amz-date"]
    auth = SigV4Auth(
        Credentials(key_id, AWS_SECRET, headers.get("x-amz-security-token")), service, region
    )
    expected = auth.signature(
        auth.string_to_sign(request, auth.canonical_request(request)), request
    )
    return (
        None
        if expected == signature
        else "the signature does not match (a signed header or the body changed)"
    )


# -- the handler ----------------------------------------------------------------------------------


class CloudHandler(Handler):
    server: CloudStandIn

    def _handle(self, body: bytes) -> None:
        state = self.server.state
        headers = {k.lower(): v for k, v in self.headers.items()}
        with state.lock:
            state.hits += 1
        path, _, query = self.path.partition("?")
        host = headers.get("host", "")
        try:
            if path.startswith("/model/"):
                return self._bedrock(host, path, headers, body)
            if path == "/token":
                return self._google_token(body)
            if ":rawPredict" in path or ":streamRawPredict" in path or "Content" in path:
                return self._vertex(path, headers, json.loads(body))
            if path.endswith("/v2.0/.well-known/openid-configuration"):
                tenant = path.split("/")[1]
                base = f"https://{host}/{tenant}"
                return self._send(
                    200,
                    {
                        "token_endpoint": f"{base}/oauth2/v2.0/token",
                        "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                        "issuer": f"{base}/v2.0",
                    },
                )
            if path.endswith("/oauth2/v2.0/token"):
                form = dict(parse_qsl(body.decode()))
                if form.get("client_secret") != self.server.entra_secret:
                    return self._send(401, {"error": "invalid_client"})
                return self._send(
                    200,
                    {
                        "token_type": "Bearer",
                        "expires_in": 3599,
                        "ext_expires_in": 3599,
                        "access_token": ENTRA_TOKEN,
                    },
                )
            if path.startswith("/openai/"):
                return self._azure(path, dict(parse_qsl(query)), headers, json.loads(body))
            self._send(404, {"message": f"the stand-in has no route for {self.command} {path}"})
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _send(
        self,
        status: int,
        obj: Any,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        self._sent(raw)
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(raw)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def _chunked(
        self, content_type: str, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        """A streamed answer in 97-byte TCP writes: messages and events cut anywhere."""
        self._sent(body)
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("transfer-encoding", "chunked")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        for i in range(0, len(body), 97):
            piece = body[i : i + 97]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _sent(self, raw: bytes) -> None:
        with self.server.state.lock:
            self.server.sent.append((self.path, hashlib.sha256(raw).hexdigest()))

    # -- Bedrock ---------------------------------------------------------------------------------

    def _bedrock(self, host: str, path: str, headers: dict[str, str], body: bytes) -> None:
        problem = sigv4_problem(self.command, host, self.path, headers, body)
        self.server.signatures.append(headers.get("authorization", "").rpartition("=")[2])
        request_id = {"x-amzn-requestid": str(uuid.uuid4())}
        if problem is not None:
            self.server.problems.append(problem)
            error = {
                "x-amzn-errortype": "InvalidSignatureException:http://internal.amazon.com/coral/com.amazon.coral.service/"
            }
            return self._send(403, {"message": problem}, {**request_id, **error})
        model, op = unquote(path.split("/")[2]), path.split("/")[3]
        data = json.loads(body)
        text = f"Echo: {prompt_of(data)}"
        if op == "converse":
            return self._send(
                200,
                {
                    "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
                    "stopReason": "end_turn",
                    "usage": {"inputTokens": 9, "outputTokens": 5, "totalTokens": 14},
                    "metrics": {"latencyMs": 321},
                },
                request_id,
            )
        if op == "invoke":
            return self._send(200, invoke_body(model, text), request_id)
        if op == "converse-stream":
            events = [("messageStart", {"role": "assistant"})]
            events += [
                ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": w}})
                for w in words(text)
            ]
            events += [
                ("contentBlockStop", {"contentBlockIndex": 0}),
                ("messageStop", {"stopReason": "end_turn"}),
                (
                    "metadata",
                    {
                        "usage": {"inputTokens": 9, "outputTokens": 5, "totalTokens": 14},
                        "metrics": {"latencyMs": 321},
                    },
                ),
            ]
            stream = b"".join(
                bedrock_event(name, {**p, "p": "abcdefgh"[: i % 8]})
                for i, (name, p) in enumerate(events)
            )
        else:  # invoke-with-response-stream
            stream = b"".join(chunk(c, i % 10) for i, c in enumerate(model_chunks(model, text)))
        self._chunked(
            "application/vnd.amazon.eventstream",
            stream,
            {**request_id, "x-amzn-bedrock-content-type": "application/json"},
        )

    # -- Google ----------------------------------------------------------------------------------

    def _google_token(self, body: bytes) -> None:
        form = dict(parse_qsl(body.decode()))
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" or not form.get(
            "assertion"
        ):
            return self._send(400, {"error": "invalid_grant"})
        self._send(200, {"access_token": GOOGLE_TOKEN, "expires_in": 3599, "token_type": "Bearer"})

    def _vertex(self, path: str, headers: dict[str, str], data: dict[str, Any]) -> None:
        if headers.get("authorization") != f"Bearer {GOOGLE_TOKEN}":
            return self._send(
                401,
                {
                    "error": {
                        "code": 401,
                        "message": "Request had invalid authentication credentials.",
                        "status": "UNAUTHENTICATED",
                    }
                },
            )
        text = f"Echo: {prompt_of(data)}"
        if ":rawPredict" in path:
            return self._send(200, anthropic_message(text, "msg_vrtx_standin"))
        if ":streamRawPredict" in path:
            sse = "".join(
                f"event: {e['type']}\ndata: {json.dumps(e)}\n\n"
                for e in anthropic_events(text, "msg_vrtx_standin", {})
            )
            return self._chunked("text/event-stream", sse.encode())

        def candidate(piece: str, last: bool) -> dict[str, Any]:
            out: dict[str, Any] = {
                "candidates": [{"content": {"role": "model", "parts": [{"text": piece}]}}],
                "modelVersion": "gemini-standin",
            }
            if last:
                out["candidates"][0]["finishReason"] = "STOP"
                out["usageMetadata"] = {
                    "promptTokenCount": 9,
                    "candidatesTokenCount": 5,
                    "totalTokenCount": 14,
                }
            return out

        if ":streamGenerateContent" in path:
            pieces = words(text)
            sse = "".join(
                f"data: {json.dumps(candidate(w, i == len(pieces) - 1))}\r\n\r\n"
                for i, w in enumerate(pieces)
            )
            return self._chunked("text/event-stream", sse.encode())
        self._send(200, candidate(text, True))

    # -- Azure OpenAI ----------------------------------------------------------------------------

    def _azure(
        self, path: str, query: dict[str, str], headers: dict[str, str], data: dict[str, Any]
    ) -> None:
        if (
            headers.get("api-key") != AZURE_KEY
            and headers.get("authorization") != f"Bearer {ENTRA_TOKEN}"
        ):
            return self._send(
                401,
                {
                    "error": {
                        "code": "401",
                        "message": "Access denied due to invalid subscription key.",
                    }
                },
            )
        if "api-version" not in query:
            return self._send(404, {"error": {"code": "404", "message": "Resource not found"}})
        text = f"Echo: {prompt_of(data)} ({path.split('/')[3]}, {query['api-version']})"
        base = {
            "id": "chatcmpl-standin",
            "created": 1700000000,
            "model": "gpt-4o-2024-08-06",
            "system_fingerprint": "fp_standin",
        }
        if data.get("stream"):
            chunks = [
                {
                    "choices": [],
                    "created": 0,
                    "id": "",
                    "model": "",
                    "object": "",
                    "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
                }
            ]
            chunks += [
                dict(
                    base,
                    object="chat.completion.chunk",
                    choices=[
                        {
                            "index": 0,
                            "delta": {"content": w},
                            "finish_reason": None,
                            "content_filter_results": {},
                        }
                    ],
                )
                for w in words(text)
            ]
            chunks.append(
                dict(
                    base,
                    object="chat.completion.chunk",
                    choices=[
                        {
                            "index": 0,
                            "delta": {},
                            "finish_reason": "stop",
                            "content_filter_results": {},
                        }
                    ],
                )
            )
            sse = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
            return self._chunked(
                "text/event-stream", sse.encode(), {"apim-request-id": str(uuid.uuid4())}
            )
        answer = dict(
            base,
            object="chat.completion",
            choices=[
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": text},
                    "content_filter_results": {},
                }
            ],
            usage={"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14},
        )
        self._send(200, answer, {"apim-request-id": str(uuid.uuid4())})


class CloudStandIn(FakeUpstreamServer):
    """The stand-in (TLS): what it sent (path, SHA-256 of the body), the signatures it was
    sent and every SigV4 problem."""

    def __init__(self, tls: tuple[Path, Path], entra_secret: str) -> None:
        super().__init__(tls)
        self.RequestHandlerClass = CloudHandler  # type: ignore[assignment]
        self.entra_secret = entra_secret
        self.sent: list[tuple[str, str]] = []
        self.problems: list[str] = []
        self.signatures: list[str] = []  # every SigV4 signature it was sent

    @property
    def port(self) -> int:
        return int(self.server_address[1])
