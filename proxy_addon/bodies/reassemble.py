"""What the user saw: the assistant text, tool calls and usage rebuilt from a recorded response.

Works on streams (event by event) and on whole bodies, for the shapes of OpenAI chat and legacy
completions, the Responses API, Anthropic Messages, Ollama, Gemini and Bedrock (Converse, and
the models' own JSON in InvokeModel answers, read as Anthropic's by ``bedrock.py``), and on a
WebSocket conversation of the Realtime API (turn by turn: the user's messages, the assistant's
text and audio transcript deltas). Pure: payloads in, a ``Transcript`` out, so ``cassette
text`` and the tests share one implementation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy_addon.bodies import bedrock
from proxy_addon.bodies.sse import parsed
from proxy_addon.model import RecordedResponse, WebSocketConversation, WebSocketMessage


@dataclass
class ToolCall:
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass
class Transcript:
    text: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    error: Any = None
    notes: list[str] = field(default_factory=list)  # non-chat bodies: embeddings, model lists
    # a WebSocket conversation, in order: ("user", text), ("assistant", text), ...
    turns: list[tuple[str, str]] = field(default_factory=list)
    # why the answer ended, as the provider said it (stop, tool_calls, end_turn, length...)
    finish: list[str] = field(default_factory=list)

    def render(self) -> str:
        parts: list[str] = []
        if self.reasoning:
            parts.append(f"[reasoning]\n{self.reasoning}\n[/reasoning]")
        if self.turns:
            parts.extend(f"[{who}] {what}" for who, what in self.turns)
        elif self.text:
            parts.append(self.text)
        for call in self.tool_calls:
            parts.append(
                f"[tool call] {call.name or '?'}({call.arguments})"
                + (f"  id={call.id}" if call.id else "")
            )
        if self.error is not None:
            parts.append(f"[error] {self.error}")
        parts.extend(self.notes)
        if self.usage:
            parts.append(
                "[usage] "
                + ", ".join(
                    f"{k}={v}" for k, v in self.usage.items() if not isinstance(v, (dict, list))
                )
            )
        return "\n".join(parts)


class _Builder:
    def __init__(self) -> None:
        self.t = Transcript()
        self._by_index: dict[Any, ToolCall] = {}

    def call(self, index: Any) -> ToolCall:
        if index not in self._by_index:
            self._by_index[index] = ToolCall()
            self.t.tool_calls.append(self._by_index[index])
        return self._by_index[index]

    def usage(self, usage: Any) -> None:
        if isinstance(usage, dict) and usage:
            self.t.usage = usage

    def finished(self, reason: Any) -> None:
        if isinstance(reason, str) and reason:
            self.t.finish.append(reason)

    # -- one payload (a stream event's data, or a whole body) ------------------------------

    def feed(self, d: Any) -> None:
        if not isinstance(d, dict):
            return
        if "error" in d and isinstance(d["error"], (dict, str)) and not d.get("choices"):
            self.t.error = (
                d["error"].get("message", d["error"])
                if isinstance(d["error"], dict)
                else d["error"]
            )
            return
        kind = d.get("type")
        if isinstance(kind, str) and kind.startswith("response."):
            return self._responses_event(d, kind)
        if d.get("object") == "response" or (kind is None and isinstance(d.get("output"), list)):
            return self._responses_body(d)
        if isinstance(kind, str) and (
            kind.startswith(("message", "content_block")) or kind == "ping"
        ):
            return self._anthropic(d, kind)
        if isinstance(d.get("choices"), list):
            return self._openai(d)
        if isinstance(d.get("candidates"), list):
            return self._gemini(d)
        if isinstance(d.get("data"), list) or isinstance(d.get("models"), list):
            return self._listing(d)
        if "message" in d or "response" in d and "done" in d:
            return self._ollama(d)

    def _openai(self, d: dict[str, Any]) -> None:
        for choice in d["choices"]:
            if not isinstance(choice, dict):
                continue
            part = choice.get("delta") or choice.get("message") or {}
            if isinstance(choice.get("text"), str):  # legacy completions
                self.t.text += choice["text"]
            self.finished(choice.get("finish_reason"))
            if isinstance(part, dict):
                if isinstance(part.get("content"), str):
                    self.t.text += part["content"]
                for name in ("reasoning_content", "reasoning"):
                    if isinstance(part.get(name), str):
                        self.t.reasoning += part[name]
                for i, tc in enumerate(part.get("tool_calls") or []):
                    if not isinstance(tc, dict):
                        continue
                    call = self.call(tc.get("index", i) if "delta" in choice else ("m", i))
                    call.id = tc.get("id") or call.id
                    fn = tc.get("function") or {}
                    call.name = fn.get("name") or call.name
                    call.arguments += fn.get("arguments") or ""
        self.usage(d.get("usage"))

    def _responses_event(self, d: dict[str, Any], kind: str) -> None:
        if kind == "response.output_text.delta":
            self.t.text += d.get("delta", "")
        elif kind in ("response.reasoning_text.delta", "response.reasoning_summary_text.delta"):
            self.t.reasoning += d.get("delta", "")
        elif kind == "response.output_item.added" and isinstance(d.get("item"), dict):
            item = d["item"]
            if item.get("type") == "function_call":
                call = self.call(d.get("output_index"))
                call.id, call.name = item.get("call_id"), item.get("name")
        elif kind == "response.function_call_arguments.delta":
            self.call(d.get("output_index")).arguments += d.get("delta", "")
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            resp = d.get("response") or {}
            self.usage(resp.get("usage"))
            self.finished(resp.get("status"))
            if resp.get("error"):
                self.t.error = resp["error"]

    def _responses_body(self, d: dict[str, Any]) -> None:
        for i, item in enumerate(d.get("output") or []):
            if not isinstance(item, dict):
                continue
            if item.get("type") == "message":
                for c in item.get("content") or []:
                    if isinstance(c, dict) and c.get("type") == "output_text":
                        self.t.text += c.get("text", "")
            elif item.get("type") == "function_call":
                call = self.call(("r", i))
                call.id, call.name = item.get("call_id"), item.get("name")
                call.arguments = item.get("arguments", "")
        self.usage(d.get("usage"))
        self.finished(d.get("status"))

    def _anthropic(self, d: dict[str, Any], kind: str) -> None:
        if kind == "message":  # a whole (non-streamed) message
            for i, block in enumerate(d.get("content") or []):
                self._anthropic_block(i, block)
            self.usage(d.get("usage"))
            self.finished(d.get("stop_reason"))
        elif kind == "message_start":
            self.usage((d.get("message") or {}).get("usage"))
        elif kind == "content_block_start":
            self._anthropic_block(d.get("index"), d.get("content_block") or {})
        elif kind == "content_block_delta":
            delta = d.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                self.t.text += delta.get("text", "")
            elif dtype == "thinking_delta":
                self.t.reasoning += delta.get("thinking", "")
            elif dtype == "input_json_delta":
                self.call(d.get("index")).arguments += delta.get("partial_json", "")
        elif kind == "message_delta":
            self.finished((d.get("delta") or {}).get("stop_reason"))
            merged = dict(self.t.usage or {})
            merged.update(d.get("usage") or {})
            self.usage(merged)

    def _anthropic_block(self, index: Any, block: dict[str, Any]) -> None:
        btype = block.get("type")
        if btype == "text":
            self.t.text += block.get("text", "")
        elif btype == "thinking":
            self.t.reasoning += block.get("thinking", "")
        elif btype == "tool_use":
            call = self.call(index)
            call.id, call.name = block.get("id"), block.get("name")
            if block.get("input"):
                call.arguments = orjson.dumps(block["input"]).decode()

    def _gemini(self, d: dict[str, Any]) -> None:
        for cand in d["candidates"][:1]:
            self.finished((cand or {}).get("finishReason"))
            for part in ((cand or {}).get("content") or {}).get("parts") or []:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    if part.get("thought"):
                        self.t.reasoning += part["text"]
                    else:
                        self.t.text += part["text"]
                elif isinstance(part, dict) and isinstance(part.get("functionCall"), dict):
                    fc = part["functionCall"]
                    call = self.call(("g", len(self.t.tool_calls)))
                    call.name = fc.get("name")
                    call.arguments = orjson.dumps(fc.get("args") or {}).decode()
        self.usage(d.get("usageMetadata"))

    def _listing(self, d: dict[str, Any]) -> None:
        items = [x for x in (d.get("data") or d.get("models") or []) if isinstance(x, dict)]
        vectors = [x["embedding"] for x in items if isinstance(x.get("embedding"), list)]
        if vectors:
            self.t.notes.append(
                f"[embeddings] {len(vectors)} vector(s) of {len(vectors[0])} dimensions"
            )
        else:
            names = [str(x.get("id") or x.get("name") or x.get("model")) for x in items]
            self.t.notes.append(f"[{len(names)} models] " + ", ".join(names))
        self.usage(d.get("usage"))

    def _ollama(self, d: dict[str, Any]) -> None:
        msg = d.get("message")
        if isinstance(msg, dict):
            if isinstance(msg.get("content"), str):
                self.t.text += msg["content"]
            if isinstance(msg.get("thinking"), str):
                self.t.reasoning += msg["thinking"]
            for tc in msg.get("tool_calls") or []:
                fn = (tc or {}).get("function") or {}
                call = self.call(("o", len(self.t.tool_calls)))
                call.name = fn.get("name")
                args = fn.get("arguments")
                call.arguments = args if isinstance(args, str) else orjson.dumps(args).decode()
        if isinstance(d.get("response"), str):
            self.t.text += d["response"]
        if isinstance(d.get("thinking"), str):
            self.t.reasoning += d["thinking"]
        if d.get("done"):
            self.finished(d.get("done_reason"))
            self.usage({k: d[k] for k in ("prompt_eval_count", "eval_count") if d.get(k)})


# Realtime API server events whose ``delta`` the user sees or hears (GA names, then beta ones).
_REALTIME_DELTAS = frozenset(
    {
        "response.output_text.delta",
        "response.output_audio_transcript.delta",
        "response.text.delta",
        "response.audio_transcript.delta",
    }
)


def _user_turns(item: Any) -> list[tuple[str, str]]:
    """The turns a client's ``conversation.item.create`` adds: a user's text or audio, a tool's
    output."""
    if not isinstance(item, dict):
        return []
    if item.get("type") == "function_call_output":
        return [("tool output", str(item.get("output", "")))]
    turns = []
    for part in item.get("content") or []:
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            turns.append((str(item.get("role", "user")), part["text"]))
        elif isinstance(part, dict) and part.get("type") == "input_audio":
            turns.append((str(item.get("role", "user")), "<audio>"))
    return turns


class _Realtime:
    """A Realtime conversation, message by message: turns in order, tool calls, usage."""

    def __init__(self) -> None:
        self.builder = _Builder()
        self.answer = ""  # the assistant's text of the response in progress

    def feed(self, message: WebSocketMessage) -> None:
        t = self.builder.t
        payload = message.payload
        if payload.kind != "json" or not isinstance(payload.value, dict):
            shown = (
                payload.value
                if payload.kind == "text"
                else f"<{len(payload.to_bytes())} bytes, binary>"
            )
            t.turns.append((message.side, shown))
            return
        d = payload.value
        kind = d.get("type")
        if message.side == "client":
            if kind == "conversation.item.create":
                t.turns.extend(_user_turns(d.get("item")))
        elif kind in _REALTIME_DELTAS:
            self.answer += str(d.get("delta", ""))
            t.text += str(d.get("delta", ""))
        elif kind == "conversation.item.input_audio_transcription.completed":
            t.turns.append(("user", f"<audio> {d.get('transcript', '')}"))
        elif (
            kind == "response.output_item.added"
            and (d.get("item") or {}).get("type") == "function_call"
        ):
            call = self.builder.call(("rt", d["item"].get("call_id")))
            call.id, call.name = d["item"].get("call_id"), d["item"].get("name")
        elif kind == "response.function_call_arguments.delta":
            self.builder.call(("rt", d.get("call_id"))).arguments += str(d.get("delta", ""))
        elif kind == "response.done":
            self.end_answer()
            self.builder.usage((d.get("response") or {}).get("usage"))
            self.builder.finished((d.get("response") or {}).get("status"))
        elif kind == "error":
            self.builder.feed(d)

    def end_answer(self) -> None:
        if self.answer:
            self.builder.t.turns.append(("assistant", self.answer))
            self.answer = ""


def reassemble_websocket(conversation: WebSocketConversation) -> Transcript:
    realtime = _Realtime()
    for message in conversation.messages:
        realtime.feed(message)
    realtime.end_answer()  # a response cut before its response.done
    return realtime.builder.t


def reassemble(resp: RecordedResponse) -> Transcript:
    if resp.websocket is not None:
        return reassemble_websocket(resp.websocket)
    builder = _Builder()
    if resp.stream is not None:
        for ev in resp.stream.events:
            data = parsed(ev)
            for payload in bedrock.as_anthropic(ev, data) if ev.headers is not None else [data]:
                builder.feed(payload)
    elif resp.body is not None and resp.body.kind == "json":
        body = resp.body.value
        for item in body if isinstance(body, list) else [body]:  # Gemini's JSON-array stream
            for payload in bedrock.as_anthropic(None, item):
                builder.feed(payload)
    elif resp.body is not None and resp.body.kind == "text":
        builder.t.text = resp.body.value
    return builder.t
