"""Bedrock's answers as the user saw them: the Converse API (whole and streamed), and the models'
own JSON inside InvokeModel bodies and InvokeModelWithResponseStream chunks (Anthropic, Meta
Llama, Amazon Titan, Amazon Nova), all in one place.

``reassemble`` reads them through ``as_anthropic``, which says what each payload holds in the
Anthropic Messages vocabulary it already rebuilds (text, thinking and tool-input deltas, stop
reasons, usage); ``pieces`` finds the same fields where a stream spells its answer, for the
secret scrub; ``kind`` and ``is_end`` name an event and recognise the last one.
"""

from __future__ import annotations

from typing import Any

from proxy_addon.bodies.eventstream import header_value
from proxy_addon.bodies.sse import Event

# A Converse delta's fields (ConverseStream's contentBlockDelta, Nova's chunks), each with the
# Anthropic delta type and field that say the same: the one table both readers use.
DELTA_FIELDS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("text",), "text_delta", "text"),
    (("toolUse", "input"), "input_json_delta", "partial_json"),
    (("reasoningContent", "text"), "thinking_delta", "thinking"),
)
# InvokeModel's models whose answer is one text field: Meta Llama, Amazon Titan (a chunk, or
# a Titan body's results), with the field naming why it ended.
TEXT_FIELDS = {"generation": "stop_reason", "outputText": "completionReason"}
METRICS = "amazon-bedrock-invocationMetrics"  # on the last chunk of every model's stream
CONVERSE_EVENTS = frozenset(
    {
        "messageStart",
        "contentBlockStart",
        "contentBlockDelta",
        "contentBlockStop",
        "messageStop",
        "metadata",
    }
)


def event_name(ev: Event) -> str | None:
    """An event stream message's name: its ``:event-type``, or for an error its
    ``:exception-type`` (``:error-code``)."""
    return (
        header_value(ev.headers, ":event-type")
        or header_value(ev.headers, ":exception-type")
        or header_value(ev.headers, ":error-code")
    )


def model_payload(ev: Event) -> Any:
    """The model's own JSON of an InvokeModelWithResponseStream ``chunk`` (its decoded
    ``bytes``), or None."""
    data = ev.data
    if event_name(ev) != "chunk" or not isinstance(data, dict):
        return None
    inner = data.get("bytes")
    return inner if isinstance(inner, dict) else None


def _nova_event(payload: dict[str, Any]) -> tuple[str, Any] | None:
    """Nova's chunks are Converse events keyed by their name: ``{"contentBlockDelta": {...}}``."""
    return next(((k, v) for k, v in payload.items() if k in CONVERSE_EVENTS), None)


def kind(ev: Event) -> str:
    """What an event is, for a review: the model's event type inside a chunk (Anthropic's
    ``type``, Nova's event name), else the message's name."""
    inner = model_payload(ev)
    if inner is not None:
        if isinstance(inner.get("type"), str):
            return inner["type"]
        nova = _nova_event(inner)
        if nova is not None:
            return nova[0]
    return event_name(ev) or "message"


def is_end(ev: Event) -> bool:
    """Whether this message is a Bedrock stream's last: ConverseStream's ``metadata``, a chunk
    that carries the invocation metrics (every model's last) or Anthropic's ``message_stop``,
    or an exception."""
    if header_value(ev.headers, ":message-type") in ("exception", "error"):
        return True
    if event_name(ev) == "metadata":
        return True
    inner = model_payload(ev)
    return inner is not None and (METRICS in inner or inner.get("type") == "message_stop")


# -- what the user saw, in the Anthropic vocabulary ---------------------------------------------


def _at(value: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _converse(name: str, payload: Any) -> list[dict[str, Any]]:
    """One Converse stream event (by name) as Anthropic events."""
    if not isinstance(payload, dict):
        return []
    index = payload.get("contentBlockIndex")
    if name == "contentBlockStart":
        tool = _at(payload, ("start", "toolUse"))
        if isinstance(tool, dict):
            block = {"type": "tool_use", "id": tool.get("toolUseId"), "name": tool.get("name")}
            return [{"type": "content_block_start", "index": index, "content_block": block}]
    elif name == "contentBlockDelta":
        return [
            {"type": "content_block_delta", "index": index, "delta": {"type": delta, field: text}}
            for path, delta, field in DELTA_FIELDS
            if isinstance(text := _at(payload.get("delta"), path), str)
        ]
    elif name == "messageStop":
        return [{"type": "message_delta", "delta": {"stop_reason": payload.get("stopReason")}}]
    elif name == "metadata":
        return [{"type": "message_delta", "usage": payload.get("usage") or {}}]
    return []


def _block(block: Any) -> dict[str, Any] | None:
    """A Converse message's content block as an Anthropic one."""
    if not isinstance(block, dict):
        return None
    if isinstance(block.get("text"), str):
        return {"type": "text", "text": block["text"]}
    if isinstance(_at(block, ("reasoningContent", "reasoningText", "text")), str):
        return {"type": "thinking", "thinking": block["reasoningContent"]["reasoningText"]["text"]}
    tool = block.get("toolUse")
    if isinstance(tool, dict):
        return {
            "type": "tool_use",
            "id": tool.get("toolUseId"),
            "name": tool.get("name"),
            "input": tool.get("input"),
        }
    return None


def _model(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """A model's own JSON (an InvokeModel body or a chunk), when Bedrock-shaped."""
    nova = _nova_event(payload)
    if nova is not None:
        return _converse(*nova)
    message = _at(payload, ("output", "message"))
    if isinstance(message, dict):  # Converse's answer, Nova's InvokeModel body
        content = [b for b in map(_block, message.get("content") or []) if b is not None]
        return [
            {
                "type": "message",
                "content": content,
                "stop_reason": payload.get("stopReason"),
                "usage": payload.get("usage"),
            }
        ]
    results = payload.get("results")
    if isinstance(results, list) and "inputTextTokenCount" in payload:  # Titan's InvokeModel body
        payloads = [r for r in results if isinstance(r, dict)]
        usage = {"inputTextTokenCount": payload.get("inputTextTokenCount")}
        return [p for r in payloads for p in _model(r)] + [
            {"type": "message_delta", "usage": usage}
        ]
    out: list[dict[str, Any]] = []
    for field, finish in TEXT_FIELDS.items():
        if isinstance(payload.get(field), str):
            delta = {"type": "text_delta", "text": payload[field]}
            out.append({"type": "content_block_delta", "index": 0, "delta": delta})
            if payload.get(finish):
                out.append({"type": "message_delta", "delta": {"stop_reason": payload[finish]}})
    counts = {k: v for k, v in payload.items() if k.endswith("_token_count") and v is not None}
    metrics = payload.get(METRICS)
    if counts or isinstance(metrics, dict):
        out.append({"type": "message_delta", "usage": counts or metrics})
    return out


def as_anthropic(ev: Event | None, payload: Any) -> list[Any]:
    """What a Bedrock payload holds, as Anthropic Messages payloads (whole, or stream events);
    ``ev`` is the stream's message (None for a body). A payload that is already Anthropic's
    (Claude on Bedrock) or not Bedrock's is given back as it is."""
    if ev is not None and ev.headers is not None:
        if header_value(ev.headers, ":message-type") in ("exception", "error"):
            message = payload.get("message") if isinstance(payload, dict) else payload
            return [{"error": {"message": message, "type": event_name(ev)}}]
        name = event_name(ev) or ""
        if name in CONVERSE_EVENTS:
            return _converse(name, payload)
        inner = model_payload(ev)
        if inner is None:
            return [payload]
        payload = inner
    if not isinstance(payload, dict) or isinstance(payload.get("type"), str):
        return [payload]
    return _model(payload) or [payload]


# -- where a stream spells its answer ----------------------------------------------------------

Piece = tuple[tuple[Any, ...], tuple[str | int, ...], str]


def pieces(payload: dict[str, Any], inner: Any) -> list[Piece]:
    """The pieces of spelled text in a Bedrock stream payload: a Converse delta, or a chunk's
    model JSON (``inner``: the ``pieces`` function for a payload, Anthropic's included), its
    paths under ``bytes``."""
    decoded = payload.get("bytes")
    if isinstance(decoded, dict):
        return [(c, ("bytes", *path), text) for c, path, text in inner(decoded)]
    nova = _nova_event(payload)
    if nova is not None:
        return [(c, (nova[0], *path), text) for c, path, text in pieces(nova[1], inner)]
    out: list[Piece] = []
    delta = payload.get("delta")
    if isinstance(delta, dict) and "contentBlockIndex" in payload:
        index = payload["contentBlockIndex"]
        for path, delta_type, _ in DELTA_FIELDS:
            text = _at(delta, path)
            if isinstance(text, str):
                out.append((("converse", repr(index), delta_type), ("delta", *path), text))
    for field in TEXT_FIELDS:
        if isinstance(payload.get(field), str):
            out.append((("bedrock", field), (field,), payload[field]))
    return out
