"""Keeping replayed conversations coherent when one request has several recorded answers.

llama-stack's corpus holds the same first turn recorded by several tests, each with its own
answer; the follow-up turn embeds that answer, so only the follow-up made after the same answer
is recorded. These pure functions give answers and assistant messages a comparable signature, so
the store's chooser can prefer an answer whose follow-up exists, or the one from the test already
being replayed.
"""

from __future__ import annotations

from typing import Any

import orjson

from proxy_addon.bodies.reassemble import Transcript


def _signature(text: str, calls: list[tuple[Any, ...]]) -> str | None:
    text = text.strip()
    if not text and not calls:
        return None
    return orjson.dumps([text, calls]).decode()


def transcript_signature(transcript: Transcript) -> str | None:
    """What the assistant said in an answer (text and tool calls), comparable to a message."""
    return _signature(transcript.text, [(c.id, c.name, c.arguments) for c in transcript.tool_calls])


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def message_signatures(body: Any) -> list[str]:
    """Signatures of the assistant messages a chat request carries (earlier answers)."""
    return [sig for _, sig in assistant_messages(body) if sig is not None]


def assistant_messages(body: Any) -> list[tuple[int, str | None]]:
    """(index, signature) of each assistant message in a chat request."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return []
    out: list[tuple[int, str | None]] = []
    for index, msg in enumerate(body["messages"]):
        if not isinstance(msg, dict) or msg.get("role") != "assistant":
            continue
        calls = []
        for tc in msg.get("tool_calls") or []:
            fn = tc.get("function") if isinstance(tc, dict) else None
            if isinstance(fn, dict):
                calls.append((tc.get("id"), fn.get("name"), fn.get("arguments") or ""))
        out.append((index, _signature(_message_text(msg.get("content")), calls)))
    return out


def write_answer(body: dict[str, Any], index: int, answer: Transcript) -> dict[str, Any]:
    """``body`` (changed in place) with the assistant message at ``index`` replaced by
    ``answer``, written in the shape the message already has: text as a string or as one text
    part, reasoning, tool calls; tool-call ids are renamed in the later tool messages too."""
    msg = body["messages"][index]
    ids: dict[str, str] = {}
    content = msg.get("content")
    if isinstance(content, list) and len(content) == 1 and isinstance(content[0], dict):
        msg["content"] = [dict(content[0], text=answer.text)]  # the same text, as a part
    elif isinstance(content, str) or answer.text:
        msg["content"] = answer.text if answer.text or content is not None else None
    if isinstance(msg.get("reasoning"), str) and answer.reasoning:
        msg["reasoning"] = answer.reasoning
    for k, call in enumerate(msg.get("tool_calls") or []):
        if k < len(answer.tool_calls):
            got = answer.tool_calls[k]
            if call.get("id") and got.id:
                ids[call["id"]] = got.id
                call["id"] = got.id
            call["function"]["name"] = got.name
            call["function"]["arguments"] = got.arguments
    for later in body["messages"][index + 1 :]:
        if isinstance(later, dict) and later.get("tool_call_id") in ids:
            later["tool_call_id"] = ids[later["tool_call_id"]]
    return body
