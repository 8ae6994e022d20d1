"""Drive the recorded multi-turn conversations of a llama-stack corpus, as a client would.

A follow-up request (one whose messages hold assistant answers) is a conversation: for each of
its assistant messages there is a recorded request made of the messages before it. A driver
sends the first turn, takes whatever answer comes back, writes that answer into the next turn
(text, tool calls, and the tool-call ids that later tool messages refer to), sends it, and so on.
If the proxy picked an answer whose follow-up was never recorded, the next turn misses.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import orjson

from proxy_addon.cassette import RecordedResponse
from proxy_addon.conversation import assistant_messages
from proxy_addon.reassemble import Transcript


@dataclass
class Conversation:
    test_id: str | None
    path: str  # the endpoint, e.g. /v1/chat/completions
    turns: list[dict[str, Any]]  # request bodies, first turn first, the follow-up last
    answer_at: list[list[int]]  # for each turn, the message indices of earlier answers


def _messages_key(messages: list[Any]) -> bytes:
    return orjson.dumps(messages, option=orjson.OPT_SORT_KEYS)


def find_conversations(entries: list[tuple[str | None, str, dict[str, Any], str | None]]
                       ) -> list[Conversation]:
    """Every recorded request whose messages contain earlier recorded answers, with the
    recordings that gave those answers as its earlier turns.

    ``entries`` are (test id, endpoint path, request body, answer signature). An earlier turn of a follow-up
    is a recording whose messages are the follow-up's messages before an assistant message,
    and whose answer is that assistant message (text, tool calls and their ids).
    """
    by_turn: dict[tuple[str, bytes, str], list[tuple[str | None, dict[str, Any]]]] = {}
    for test_id, path, body, answer in entries:
        if answer is not None:
            key = (path, _messages_key(body.get("messages") or []), answer)
            by_turn.setdefault(key, []).append((test_id, body))
    out = []
    for test_id, path, body, _ in entries:
        messages = body.get("messages") or []
        answers = assistant_messages(body)
        if not answers:
            continue
        turns = []
        for index, sig in answers:
            candidates = by_turn.get((path, _messages_key(messages[:index]), sig or ""), [])
            if not candidates:
                break
            same_test = [b for t, b in candidates if t == test_id]
            turns.append((same_test or [candidates[0][1]])[0])
        else:
            turns.append(body)
            out.append(Conversation(test_id, path, turns, [[i for i, _ in answers[:n]]
                                                     for n in range(len(turns))]))
    return out


def write_answer(body: dict[str, Any], index: int, answer: Transcript) -> dict[str, Any]:
    """``body`` with the assistant message at ``index`` replaced by ``answer`` in its shape."""
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
    for later in body["messages"][index + 1:]:
        if isinstance(later, dict) and later.get("tool_call_id") in ids:
            later["tool_call_id"] = ids[later["tool_call_id"]]
    return body


def drive(conv: Conversation, send: Callable[[dict[str, Any]], RecordedResponse | None],
          answer_of: Callable[[RecordedResponse], Transcript]) -> int:
    """Play a conversation; returns how many turns were answered (all of them on success)."""
    answers: list[Transcript] = []
    for n, turn in enumerate(conv.turns):
        body = copy.deepcopy(turn)
        for index, answer in zip(conv.answer_at[n], answers):
            write_answer(body, index, answer)
        resp = send(body)
        if resp is None:
            return n
        answers.append(answer_of(resp))
    return len(conv.turns)
