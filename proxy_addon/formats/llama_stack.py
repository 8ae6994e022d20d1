"""llama-stack's test-recorder format: read it as wire exchanges, and write it back.

A llama-stack file records an SDK call, not an HTTP exchange: the body is the call's arguments,
responses are pydantic objects (``{"__type__": ..., "__data__": ...}``), streams are lists of
chunk objects (or raw SSE lines for raw HTTP calls), errors are serialised exceptions, and tool
calls (Tavily web search) have no URL at all. ``read`` turns each into what the provider sent on
the wire, so the proxy can replay it to any client; ``llama_stack_export`` goes the other way and
names the file with llama-stack's own hash, so its recorder finds it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from proxy_addon.bodies.sse import Event, parse_data, split
from proxy_addon.model import (
    Body,
    CassetteError,
    RecordedRequest,
    RecordedResponse,
    Recording,
    Stream,
    require,
)
from proxy_addon.redaction.secret_rules import REDACTED

# Endpoints that real clients fetch with GET although llama-stack's recorder writes POST.
GET_ENDPOINTS = frozenset({"/v1/models", "/models", "/api/tags", "/api/ps", "/api/version"})
# Model-list endpoints: llama-stack hashes them without the test id and names the file
# models-<hash>-<digest of the model ids>.json.
MODEL_LIST_ENDPOINTS = ("/api/tags", "/v1/models", "/v1/openai/v1/models")
# SDK call arguments that are not part of the JSON body on the wire.
_SDK_ONLY_ARGS = ("extra_headers", "extra_query", "timeout")


def unwrap(value: Any) -> Any:
    """Replace ``{"__type__": ..., "__data__": ...}`` wrappers by their data.

    The recorder wraps top-level objects and each chunk of a list; what is inside ``__data__``
    is a plain ``model_dump``, so this does not walk into it (walking made loading a large
    corpus several times slower).
    """
    if isinstance(value, dict):
        if "__type__" in value and "__data__" in value:
            return value["__data__"]
        return value
    if isinstance(value, list):
        return [
            v["__data__"] if isinstance(v, dict) and "__type__" in v and "__data__" in v else v
            for v in value
        ]
    return value


def _type_name(value: Any) -> str:
    return value.get("__type__", "") if isinstance(value, dict) else ""


def sdk_call_body(call_args: Any) -> Any:
    """The JSON body an SDK sends for these call arguments: ``extra_body`` merged in."""
    if not isinstance(call_args, dict):
        return call_args
    body = {k: v for k, v in call_args.items() if k not in _SDK_ONLY_ARGS and k != "extra_body"}
    extra = call_args.get("extra_body")
    if isinstance(extra, dict):
        body.update(extra)
    return body


# -- tool-level records: replayed as the provider's real HTTP call ----------------------------


def _tavily_request(kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "https://api.tavily.com/search", {"api_key": REDACTED, "query": kwargs["query"]}


def _tavily_response(result: Any) -> Any:
    """llama-stack keeps ``{"query", "top_k"}`` made from Tavily's ``{"query", "results"}``."""
    content = result.get("content") if isinstance(result, dict) else None
    data = json.loads(content) if isinstance(content, str) else {}
    return {"query": data.get("query"), "results": data.get("top_k", [])}


def _tavily_result(http_body: Any) -> Any:
    """The inverse of ``_tavily_response``: the ToolInvocationResult llama-stack records."""
    body = http_body if isinstance(http_body, dict) else {}
    content = json.dumps({"query": body.get("query"), "top_k": body.get("results", [])})
    return {
        "__type__": "llama_stack_api.tools.ToolInvocationResult",
        "__data__": {
            "content": content,
            "error_message": None,
            "error_code": None,
            "metadata": None,
        },
    }


# (provider, tool) -> (kwargs -> (url, body), tool result -> HTTP body, HTTP body -> tool result)
TOOL_HTTP: dict[
    tuple[str, str],
    tuple[
        Callable[[dict[str, Any]], tuple[str, dict[str, Any]]],
        Callable[[Any], Any],
        Callable[[Any], Any],
    ],
] = {
    ("tavily", "web_search"): (_tavily_request, _tavily_response, _tavily_result),
}


def _tool(req: dict[str, Any], path: Path | str | None) -> tuple[Any, ...]:
    name = (req.get("provider"), req.get("tool_name"))
    require(
        name in TOOL_HTTP and isinstance(req.get("kwargs"), dict),
        path,
        f"llama-stack tool record for {name[0]}.{name[1]} has no known HTTP form",
    )
    return TOOL_HTTP[name]  # type: ignore[index]


def _tool_request(req: dict[str, Any], path: Path | str | None) -> RecordedRequest:
    url, body = _tool(req, path)[0](req["kwargs"])
    return RecordedRequest(
        "POST", url, {"content-type": "application/json"}, Body("json", body), any_host=False
    )


def _read_tool(doc: dict[str, Any], path: Path | str | None) -> Recording:
    req = doc["request"]
    to_response = _tool(req, path)[1]
    result = unwrap(doc["response"].get("body"))
    return Recording(
        request=_tool_request(req, path),
        responses=[
            RecordedResponse(
                200, [["content-type", "application/json"]], body=Body("json", to_response(result))
            )
        ],
        test_id=doc.get("test_id") if isinstance(doc.get("test_id"), str) else None,
        source="llama-stack",
        llama_stack={"request": req, "response": doc["response"]},
    )


# -- inference records -------------------------------------------------------------------------


def _stream(chunks: list[Any]) -> Stream:
    if all(isinstance(c, str) for c in chunks):  # raw SSE lines, as the provider sent them
        return Stream("sse", split("sse", ("\n".join(chunks) + "\n\n").encode()))
    if any(_type_name(c).startswith("ollama.") for c in chunks[:1]):
        return Stream("ndjson", [Event(data=data) for data in unwrap(chunks)])
    events = [Event(data=data) for data in unwrap(chunks)]
    events.append(Event(data="[DONE]"))
    return Stream("sse", events)


def _error(resp: dict[str, Any]) -> RecordedResponse:
    found = resp.get("exception_data")
    data: dict[str, Any] = found if isinstance(found, dict) else {}
    status = data.get("status_code")
    if not isinstance(status, int) or not 400 <= status <= 599:
        status = 500
    message = resp.get("exception_message") or data.get("message") or "recorded provider error"
    body = data.get("body")
    if body is None:
        body = {"error": {"message": message, "type": data.get("type")}}
    elif isinstance(body, dict) and "error" not in body and "- {'error'" in str(message):
        # the SDK keeps the inside of {"error": {...}}; the wire had the wrapper
        body = {"error": body}
    return RecordedResponse(
        status=status, headers=[["content-type", "application/json"]], body=Body("json", body)
    )


def real_path(recorded_path: str, endpoint: str) -> str:
    """Where the request really went. The recorder joined a base URL ending in ``/v1`` with an
    endpoint starting with ``/v1``: ``/v1/v1/chat/completions`` was ``/v1/chat/completions``,
    and ``/ml/v1/v1/chat/completions`` (watsonx) was ``/ml/v1/chat/completions``."""
    if recorded_path.endswith(endpoint) and "/v1/v1/" in recorded_path:
        return recorded_path.replace("/v1/v1/", "/v1/", 1)
    return recorded_path if recorded_path.endswith(endpoint) else endpoint


def is_llama_stack(doc: Any) -> bool:
    return (
        isinstance(doc, dict)
        and "version" not in doc
        and isinstance(doc.get("request"), dict)
        and isinstance(doc.get("response"), dict)
    )


def _wire_request(
    req: dict[str, Any], path: Path | str | None
) -> tuple[RecordedRequest, str, Any, Any]:
    """(the request as sent on the wire, its endpoint, the call's arguments, the wire body)."""
    url = req.get("url")
    if not isinstance(url, str) or "://" not in url:
        raise CassetteError(path, "llama-stack request.url missing")
    raw_http = "payload" in req
    call_args = req.get("payload") if raw_http else req.get("body")
    body = call_args if raw_http else sdk_call_body(call_args)
    parts = urlsplit(url)
    endpoint = req.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint.startswith("/"):
        endpoint = parts.path
    method = str(req.get("method") or "POST").upper()
    if endpoint in GET_ENDPOINTS and not body:
        method, body = "GET", None  # recorded as POST; clients list models with GET
    query = parts.query
    extra_query = call_args.get("extra_query") if isinstance(call_args, dict) else None
    if isinstance(extra_query, dict) and extra_query:  # the SDK sends it in the URL
        query = "&".join(q for q in (query, urlencode(extra_query)) if q)
    request = RecordedRequest(
        method=method,
        url=f"{parts.scheme}://{parts.netloc}{real_path(parts.path, endpoint)}"
        + (f"?{query}" if query else ""),
        headers={"content-type": "application/json"} if body else {},
        body=Body("json", body) if body else None,
        any_host=True,
    )
    return request, endpoint, call_args, body


def _wire_response(
    resp: dict[str, Any], endpoint: str, path: Path | str | None
) -> RecordedResponse:
    """The answer as the provider sent it: an error, a stream, or a body."""
    if resp.get("is_exception"):
        return _error(resp)
    status = resp.get("status", 200)
    if not isinstance(status, int):
        raise CassetteError(path, "llama-stack response.status must be an integer")
    rbody = resp.get("body")
    if resp.get("is_streaming"):
        if not isinstance(rbody, list):
            raise CassetteError(path, "llama-stack streamed body must be a list")
        stream = _stream(rbody)
        ctype = "application/x-ndjson" if stream.format == "ndjson" else "text/event-stream"
        return RecordedResponse(status=status, headers=[["content-type", ctype]], stream=stream)
    value = unwrap(rbody)
    if isinstance(rbody, list) and endpoint.endswith("/models"):
        value = {"object": "list", "data": value}
    elif isinstance(rbody, str):
        value = parse_data(rbody)
    as_text = isinstance(value, str)
    return RecordedResponse(
        status=status,
        headers=[["content-type", "text/plain" if as_text else "application/json"]],
        body=Body("text", value) if as_text else Body("json", value),
    )


def read_request(doc: dict[str, Any], path: Path | str | None = None) -> RecordedRequest:
    """Only the request of a llama-stack recording (its response need not be there)."""
    req = doc.get("request")
    if not isinstance(req, dict):
        raise CassetteError(path, "llama-stack 'request' must be an object")
    if "kwargs" in req and "url" not in req:
        return _tool_request(req, path)
    return _wire_request(req, path)[0]


def read(doc: dict[str, Any], path: Path | str | None = None) -> Recording:
    """A llama-stack recording as the client saw it on the wire."""
    req, resp = doc["request"], doc["response"]
    if "kwargs" in req and "url" not in req:
        return _read_tool(doc, path)
    request, endpoint, call_args, body = _wire_request(req, path)
    test_id = doc.get("test_id")
    meta_request = {k: v for k, v in req.items() if k not in ("body", "payload", "headers")}
    meta_request["body_field"] = "payload" if "payload" in req else "body"
    if call_args != body:  # e.g. extra_body: keep the call's own arguments for the hash
        meta_request["call_args"] = call_args
    return Recording(
        request=request,
        responses=[_wire_response(resp, endpoint, path)],
        test_id=test_id if isinstance(test_id, str) else None,
        source="llama-stack",
        llama_stack={"request": meta_request, "response": resp},
    )


# -- the hash recipe and export ----------------------------------------------------------------
