"""Where the text a stream spells sits in each provider's events: the pieces that, joined in
order, make one answer's text, reasoning or tool-call arguments, per choice, content block or
output item.

A stream sends its answer in deltas, a few characters each, so anything in the answer (a key
the model repeats, a tool call's ``{"api_key": ...}``) may be cut across events; only the
joined text shows it (``redaction/spelled.py`` looks there). The fields are the ones
``reassemble`` builds what the user saw from (OpenAI chat and completions, the Responses and
Realtime APIs, Anthropic, Ollama, Gemini, and Bedrock's, which ``bedrock.py`` knows); a test
checks that both join to the same text.
Plain-text events (a payload that is not JSON) are pieces of one text too.
"""

from __future__ import annotations

from typing import Any

from proxy_addon.bodies import bedrock

# (channel, path in the payload, text): pieces of one channel, in order, spell one text
Piece = tuple[tuple[Any, ...], tuple[str | int, ...], str]

_CHAT_FIELDS = ("content", "reasoning_content", "reasoning", "refusal")
_ANTHROPIC_FIELDS = ("text", "thinking", "partial_json")
_OLLAMA_FIELDS = ("content", "thinking")


_PLAIN = (str, int, float, bool, type(None))


def _id(value: Any) -> Any:
    """A payload's own id for a channel (an index, an item id), usable as a dict key."""
    return value if type(value) in _PLAIN else repr(value)


def pieces(payload: Any) -> list[Piece]:
    """The pieces of spelled text in one event's payload (parsed JSON, or a string)."""
    if isinstance(payload, str):
        return [(("text",), (), payload)]
    if not isinstance(payload, dict):
        return []
    kind = payload.get("type")
    if kind == "content_block_delta":
        return _anthropic(payload)
    if isinstance(kind, str) and kind.endswith(".delta"):
        return _typed_delta(payload, kind)
    choices = payload.get("choices")
    if type(choices) is list:  # OpenAI: nothing else in the payload is spelled
        return _chat(choices)
    out: list[Piece] = []
    if isinstance(payload.get("candidates"), list):
        out += _gemini(payload["candidates"])
    message = payload.get("message")
    if isinstance(message, dict):  # Ollama's chat
        for name in _OLLAMA_FIELDS:
            if isinstance(message.get(name), str):
                out.append((("ollama", name), ("message", name), message[name]))
    for name in ("response", "thinking"):  # Ollama's generate
        if "done" in payload and isinstance(payload.get(name), str):
            out.append((("ollama", name), (name,), payload[name]))
    return out or bedrock.pieces(payload, pieces)


def _typed_delta(payload: dict[str, Any], kind: str) -> list[Piece]:
    """The Responses and Realtime APIs: ``response.output_text.delta``,
    ``response.function_call_arguments.delta``, ... with a string ``delta`` (audio deltas
    are base64 sound, not text)."""
    delta = payload.get("delta")
    if not isinstance(delta, str) or kind.endswith("audio.delta"):
        return []
    where = tuple(
        _id(payload.get(k))
        for k in ("item_id", "output_index", "content_index", "summary_index", "call_id")
    )
    return [((kind, *where), ("delta",), delta)]


def _anthropic(payload: dict[str, Any]) -> list[Piece]:
    delta = payload.get("delta")
    if not isinstance(delta, dict):
        return []
    return [
        (("block", _id(payload.get("index")), name), ("delta", name), delta[name])
        for name in _ANTHROPIC_FIELDS
        if isinstance(delta.get(name), str)
    ]


def _chat(choices: list[Any]) -> list[Piece]:
    """OpenAI chat (``delta``, ``message``) and legacy completions (``text``), per choice; a
    tool call's arguments per call. (Called for every event of most streams: kept lean.)"""
    out: list[Piece] = []
    for i, choice in enumerate(choices):
        if type(choice) is not dict:
            continue
        n = _id(choice.get("index", i))
        text = choice.get("text")
        if type(text) is str:
            out.append((("choice", n, "text"), ("choices", i, "text"), text))
        for part_name in ("delta", "message"):
            part = choice.get(part_name)
            if type(part) is not dict:
                continue
            for name in _CHAT_FIELDS:
                value = part.get(name)
                if type(value) is str:
                    out.append((("choice", n, name), ("choices", i, part_name, name), value))
            calls = part.get("tool_calls")
            if type(calls) is not list:
                continue
            for j, call in enumerate(calls):
                function = call.get("function") if type(call) is dict else None
                if type(function) is dict and type(function.get("arguments")) is str:
                    channel = ("choice", n, "call", _id(call.get("index", j)))
                    path = ("choices", i, part_name, "tool_calls", j, "function", "arguments")
                    out.append((channel, path, function["arguments"]))
    return out


def _gemini(candidates: list[Any]) -> list[Piece]:
    out: list[Piece] = []
    for i, candidate in enumerate(candidates):
        content = candidate.get("content") if isinstance(candidate, dict) else None
        parts = content.get("parts") if isinstance(content, dict) else None
        for j, part in enumerate(parts if isinstance(parts, list) else []):
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                channel = ("candidate", _id(candidate.get("index", i)), bool(part.get("thought")))
                out.append(
                    (channel, ("candidates", i, "content", "parts", j, "text"), part["text"])
                )
    return out
