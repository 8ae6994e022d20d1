"""What changed in what the user saw between two versions of a recording (``cassette diff``),
split into what a reviewer must see and token-level noise.

**Shape** (a different kind of answer; a test may well behave differently): the number of
responses; per response its status, stream or body (and the stream's format), whether a stream
was cut, the sequence of event types with repeats collapsed (one more content block, a tool
call where there was none), the finish reasons, the tool calls (how many, their names, the
structure of their arguments: keys and value types), whether there is text, reasoning, an
error (and its message), which usage fields are reported, and the summary of a listing
(embeddings, model lists).

**Noise** (the same kind of answer, worded or counted differently): the wording of the text and
the reasoning, tool call ids and argument values, usage numbers, and how many events of each
type a stream has (a longer answer is more deltas).

Pure: two ``Recording`` in, lines of text out. The text is rebuilt by ``reassemble``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy_addon.bodies import bedrock
from proxy_addon.bodies.reassemble import ToolCall, Transcript, reassemble
from proxy_addon.bodies.sse import Event, parsed
from proxy_addon.model import RecordedResponse, Recording, WebSocketMessage

TEXT_WINDOW = 70  # characters shown either side of where two texts start to differ


@dataclass
class Changes:
    shape: list[str] = field(default_factory=list)
    noise: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.shape or self.noise)


def event_type(ev: Event) -> str:
    """An event's kind: its SSE ``event:`` name, else its payload's ``type`` or ``object``; an
    AWS event stream message's is named by ``bedrock.kind`` (its ``:event-type``, or the model's
    event inside a chunk)."""
    if ev.headers is not None:
        return bedrock.kind(ev)
    if ev.event:
        return ev.event
    data = parsed(ev)
    if isinstance(data, dict):
        kind = data.get("type") or data.get("object")
        if isinstance(kind, str):
            return kind
        if "done" in data:  # Ollama: pieces, then the final one
            return "done" if data["done"] else "chunk"
        return "data"
    if isinstance(data, str):
        return data if data == "[DONE]" else "text"
    return "comment" if data is None else "data"


def message_type(message: WebSocketMessage) -> str:
    """A server message's kind: its JSON ``type``, else ``text`` or ``binary``."""
    payload = message.payload
    if (
        payload.kind == "json"
        and isinstance(payload.value, dict)
        and isinstance(payload.value.get("type"), str)
    ):
        return payload.value["type"]
    return "binary" if payload.kind == "base64" else "text"


def event_runs(resp: RecordedResponse) -> list[tuple[str, int]]:
    """The stream's event types (a WebSocket conversation's server messages') in order, each
    run of one type as (type, how many)."""
    if resp.websocket is not None:
        kinds = [message_type(m) for m in resp.websocket.messages if m.side == "server"]
    else:
        kinds = [event_type(ev) for ev in resp.stream.events] if resp.stream is not None else []
    runs: list[tuple[str, int]] = []
    for kind in kinds:
        if runs and runs[-1][0] == kind:
            runs[-1] = (kind, runs[-1][1] + 1)
        else:
            runs.append((kind, 1))
    return runs


def _structure(value: Any) -> str:
    """A JSON value's shape: keys and value types, not the values."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_structure(v)}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, list):
        kinds = sorted({_structure(v) for v in value})
        return "[" + " | ".join(kinds) + "]"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "null" if value is None else "string"


def arguments_structure(call: ToolCall) -> str:
    if not call.arguments:
        return "no arguments"
    try:
        return _structure(orjson.loads(call.arguments))
    except orjson.JSONDecodeError:
        return "text (not JSON)"


def _kind(resp: RecordedResponse) -> str:
    if resp.websocket is not None:
        return "WebSocket conversation"
    if resp.stream is not None:
        return f"{resp.stream.format} stream"
    return f"{resp.body.kind} body" if resp.body is not None else "no body"


def _end(resp: RecordedResponse) -> str | None:
    """How a stream or a WebSocket conversation ended."""
    if resp.websocket is not None:
        close = resp.websocket.close
        return (
            "still open when recorded"
            if close is None
            else f"closed by the {close.side} ({close.code})"
        )
    stream = resp.stream
    return (
        None
        if stream is None
        else ("complete" if stream.complete else f"cut ({stream.cut or 'cut off'})")
    )


def _shape(resp: RecordedResponse, t: Transcript, runs: list[tuple[str, int]]) -> dict[str, Any]:
    return {
        "status": resp.status,
        "answer": _kind(resp),
        "stream end": _end(resp),
        "event sequence": " > ".join(kind for kind, _ in runs) or None,
        "finish": ", ".join(t.finish) or None,
        "tool calls": [f"{c.name or '?'}({arguments_structure(c)})" for c in t.tool_calls],
        "text": "present" if t.text else "none",
        "reasoning": "present" if t.reasoning else "none",
        "error": t.error,
        "usage fields": sorted(t.usage) if t.usage else None,
        "listing": "; ".join(t.notes) or None,
    }


def _clip(text: str, at: int) -> str:
    start = max(0, at - TEXT_WINDOW)
    end = at + TEXT_WINDOW
    return ("…" if start else "") + text[start:end] + ("…" if end < len(text) else "")


def text_change(name: str, old: str, new: str) -> str:
    """Two texts, shown from a little before where they start to differ."""
    at = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new)))
    return (
        f"{name} ({len(old.split())} → {len(new.split())} words): "
        f"{orjson.dumps(_clip(old, at)).decode()} → {orjson.dumps(_clip(new, at)).decode()}"
    )


def _noise(
    ta: Transcript, runs_a: list[tuple[str, int]], tb: Transcript, runs_b: list[tuple[str, int]]
) -> list[str]:
    out: list[str] = []
    for name, x, y in (("text", ta.text, tb.text), ("reasoning", ta.reasoning, tb.reasoning)):
        if x != y and x and y:
            out.append(text_change(name, x, y))
    for i, (call_a, call_b) in enumerate(zip(ta.tool_calls, tb.tool_calls)):
        if call_a.arguments != call_b.arguments:
            out.append(f"tool call {i + 1} arguments: {call_a.arguments} → {call_b.arguments}")
        if call_a.id != call_b.id:
            out.append(f"tool call {i + 1} id: {call_a.id} → {call_b.id}")
    usage_a, usage_b = ta.usage or {}, tb.usage or {}
    numbers = [
        f"{k} {usage_a[k]} → {usage_b[k]}"
        for k in sorted(set(usage_a) & set(usage_b))
        if usage_a[k] != usage_b[k] and not isinstance(usage_a[k], (dict, list))
    ]
    if numbers:
        out.append("usage: " + ", ".join(numbers))
    if [k for k, _ in runs_a] == [k for k, _ in runs_b]:
        counts = [f"{k} {n} → {m}" for (k, n), (_, m) in zip(runs_a, runs_b) if n != m]
        if counts:
            out.append("events: " + ", ".join(counts))
    return out


def compare(old: Recording, new: Recording) -> Changes:
    """What changed from ``old`` to ``new`` in the answers the user saw."""
    changes = Changes()
    if len(old.responses) != len(new.responses):
        changes.shape.append(f"responses: {len(old.responses)} → {len(new.responses)}")
    several = max(len(old.responses), len(new.responses)) > 1
    for i, (a, b) in enumerate(zip(old.responses, new.responses)):
        prefix = f"response {i + 1}: " if several else ""
        ta, tb = reassemble(a), reassemble(b)
        runs_a, runs_b = event_runs(a), event_runs(b)
        shape_a, shape_b = _shape(a, ta, runs_a), _shape(b, tb, runs_b)
        for name in shape_a:
            if shape_a[name] != shape_b[name]:
                changes.shape.append(
                    f"{prefix}{name}: {_show(shape_a[name])} → {_show(shape_b[name])}"
                )
        changes.noise += [prefix + line for line in _noise(ta, runs_a, tb, runs_b)]
    return changes


def _show(value: Any) -> str:
    if value is None or value == []:
        return "none"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)
