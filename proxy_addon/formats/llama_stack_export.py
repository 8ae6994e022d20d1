"""Writing llama-stack's test-recorder files back from cassettes: the SDK call a request was,
the pydantic type names of its answers, and llama-stack's hash recipe, so its recorder finds the
file (reading them is ``llama_stack.py``)."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any
from urllib.parse import urlsplit

from proxy_addon.bodies.sse import frame
from proxy_addon.formats.llama_stack import MODEL_LIST_ENDPOINTS, TOOL_HTTP, unwrap
from proxy_addon.model import RecordedResponse, Recording

# floats llama-stack's hash rounds to five decimals, written inside strings
_FLOAT_IN_STRING = re.compile(r"(-?\d+\.\d{4,})")


def _recorder_request(rec: Recording, meta: dict[str, Any], test_id: str | None) -> dict[str, Any]:
    """The request dict llama-stack wrote, rebuilt from the metadata an import kept."""
    if "kwargs" in meta:  # a tool record: kept whole
        return dict(meta, test_id=test_id) if "test_id" in meta else dict(meta)
    body = meta.get("call_args")
    if body is None:
        body = (
            rec.request.body.value
            if rec.request.body is not None and rec.request.body.kind == "json"
            else {}
        )
    out = {k: v for k, v in meta.items() if k not in ("body_field", "call_args")}
    if meta.get("body_field") == "payload":
        out["payload"] = body
        if "test_id" in out:
            out["test_id"] = test_id
        return out
    ordered = {
        "method": out.pop("method", "POST"),
        "url": out.pop("url", rec.request.url),
        "headers": {},
        "body": body,
    }
    ordered.update(out)
    return ordered


def _hash_form(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _hash_form(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_hash_form(v) for v in value]
    if isinstance(value, float):
        return round(value, 5)
    if isinstance(value, str):
        return _FLOAT_IN_STRING.sub(lambda m: f"{float(m.group(0)):.5f}", value)
    return value


def request_hash(req: dict[str, Any], test_id: str | None) -> str:
    """llama-stack's file hash for a recorded request (checked against its own file names)."""
    if "kwargs" in req and "url" not in req:
        normalised: dict[str, Any] = {
            "provider": req["provider"],
            "tool_name": req["tool_name"],
            "kwargs": req["kwargs"],
        }
    elif "payload" in req:
        normalised = {
            "test_id": test_id,
            "url": req["url"],
            "method": req["method"].upper(),
            "payload": _hash_form(req["payload"]),
        }
    else:
        parts = urlsplit(req["url"])
        body = _hash_form(req.get("body"))
        if "bedrock" in parts.netloc and isinstance(body, dict):
            body.pop("stream_options", None)
        normalised = {"method": req["method"].upper(), "endpoint": parts.path, "body": body}
        if parts.path not in MODEL_LIST_ENDPOINTS:
            normalised["test_id"] = test_id
    return hashlib.sha256(json.dumps(normalised, sort_keys=True).encode()).hexdigest()


def file_name(req: dict[str, Any], response_body: Any, test_id: str | None) -> str:
    digest = request_hash(req, test_id)
    endpoint = req.get("endpoint")
    if endpoint in MODEL_LIST_ENDPOINTS:
        items = unwrap(response_body)
        if isinstance(items, dict):
            items = items.get("models") or items.get("data") or []
        idents = sorted(
            {
                str(m.get("model") if endpoint == "/api/tags" else m.get("id"))
                for m in items
                if isinstance(m, dict)
            }
        )
        suffix = hashlib.sha256("|".join(idents).encode()).hexdigest()[:8]
        return f"models-{digest}-{suffix}.json"
    return f"{digest}.json"


_OPENAI_TYPES = {
    "chat.completion": "openai.types.chat.chat_completion.ChatCompletion",
    "chat.completion.chunk": "openai.types.chat.chat_completion_chunk.ChatCompletionChunk",
    "text_completion": "openai.types.completion.Completion",
    "model": "openai.types.model.Model",
    "response": "openai.types.responses.response.Response",
}


_OLLAMA_TYPES = {
    "/api/generate": "ollama._types.GenerateResponse",
    "/api/chat": "ollama._types.ChatResponse",
    "/api/ps": "ollama._types.ProcessResponse",
    "/api/tags": "ollama._types.ListResponse",
    "/api/embed": "ollama._types.EmbedResponse",
}


def _wrap(data: Any, endpoint: str) -> Any:
    if not isinstance(data, dict):
        return data
    if endpoint in _OLLAMA_TYPES:
        return {"__type__": _OLLAMA_TYPES[endpoint], "__data__": data}
    if endpoint.endswith("/embeddings"):
        return {
            "__type__": "openai.types.create_embedding_response.CreateEmbeddingResponse",
            "__data__": data,
        }
    kind = _OPENAI_TYPES.get(str(data.get("object")))
    return {"__type__": kind, "__data__": data} if kind else data


def recorder_url(scheme: str, netloc: str, path: str) -> tuple[str, str]:
    """(url, endpoint) as llama-stack records them: the inverse of ``real_path``. Its OpenAI
    clients' base URL ends in /v1 and the endpoint starts with /v1 again; model lists and
    Ollama's native API are not doubled."""
    prefix, sep, rest = path.partition("/v1/")
    if not sep:
        return f"{scheme}://{netloc}{path}", path
    endpoint = "/v1/" + rest
    if endpoint in MODEL_LIST_ENDPOINTS:
        return f"{scheme}://{netloc}{path}", endpoint
    return f"{scheme}://{netloc}{prefix}/v1{endpoint}", endpoint


def export(rec: Recording, test_id: str | None = None) -> tuple[str, dict[str, Any]]:
    """A llama-stack recording (file name, document) for the first response of ``rec``."""
    test_id = test_id if test_id is not None else rec.test_id
    meta = rec.llama_stack or {}
    if "response" in meta:  # read from a llama-stack file just now: give back what it said
        req = _recorder_request(rec, meta["request"], test_id)
        doc: dict[str, Any] = {
            "test_id": test_id,
            "request": req,
            "response": meta["response"],
            "id_normalization_mapping": {},
        }
        return file_name(req, meta["response"].get("body"), test_id), doc
    parts = urlsplit(rec.request.url)
    url, endpoint = recorder_url(parts.scheme, parts.netloc, parts.path)
    body = (
        rec.request.body.value
        if rec.request.body is not None and rec.request.body.kind == "json"
        else {}
    )
    answer = rec.responses[0]
    raw_sse = endpoint.endswith("/messages")  # Anthropic: recorded as raw HTTP lines
    if raw_sse:
        req = {
            "test_id": test_id,
            "url": rec.request.url,
            "method": rec.request.method,
            "payload": body,
        }
    else:
        req = {
            "method": "POST",
            "url": url,
            "headers": {},
            "body": body,
            "endpoint": endpoint,
            "model": body.get("model", "") if isinstance(body, dict) else "",
        }
    if "request" in meta:  # imported earlier: the recorder's own URL, endpoint and arguments
        req = _recorder_request(rec, meta["request"], test_id)
        raw_sse = "payload" in req
        tool = TOOL_HTTP.get((req.get("provider"), req.get("tool_name")))  # type: ignore[arg-type]
        if "kwargs" in req and tool is not None:
            body_value = answer.body.value if answer.body is not None else None
            response = {"body": tool[2](body_value), "is_streaming": False}
            doc = {
                "test_id": test_id,
                "request": req,
                "response": response,
                "id_normalization_mapping": {},
            }
            return file_name(req, None, test_id), doc
    response = _recorder_response(answer, endpoint, raw_sse)
    doc = {"test_id": test_id, "request": req, "response": response, "id_normalization_mapping": {}}
    return file_name(req, response.get("body"), test_id), doc


def _recorder_response(answer: RecordedResponse, endpoint: str, raw_sse: bool) -> dict[str, Any]:
    """The response dict llama-stack's recorder writes for this answer: a serialised SDK
    exception for an error, chunk objects (or raw SSE lines) for a stream, objects otherwise."""
    if answer.status >= 400:
        err = answer.body.value if answer.body is not None and answer.body.kind == "json" else {}
        inner = err.get("error", err) if isinstance(err, dict) else err
        message = f"Error code: {answer.status} - {err!r}"
        return {
            "body": None,
            "is_streaming": False,
            "is_exception": True,
            "exception_data": {
                "category": "provider_sdk",
                "provider": "openai",
                "type": "APIStatusError",
                "message": message,
                "status_code": answer.status,
                "body": inner,
            },
            "exception_message": message,
        }
    if answer.stream is not None:
        if raw_sse:
            lines = frame("sse", answer.stream.events).decode().split("\n")
            chunks: list[Any] = lines[:-2] if lines[-2:] == ["", ""] else lines
        else:
            chunks = [
                _wrap(e.data, endpoint)
                for e in answer.stream.events
                if not (isinstance(e.data, str) and e.data.strip() == "[DONE]")
            ]
        return {"body": chunks, "is_streaming": True}
    value = answer.body.value if answer.body is not None else None
    if endpoint in ("/v1/models", "/v1/openai/v1/models") and isinstance(value, dict):
        value = [_wrap(m, endpoint) for m in value.get("data", [])]
    else:
        value = _wrap(value, endpoint)
    return {"body": value, "is_streaming": False}
