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
from proxy_addon.conversation import assistant_messages, write_answer
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


def drive(conv: Conversation, send: Callable[[dict[str, Any]], RecordedResponse | None],
          answer_of: Callable[[RecordedResponse], Transcript]) -> int:
    """Play a conversation; returns how many turns were answered (all of them on success)."""
    return play(conv, send, answer_of)[0]


def play(conv: Conversation, send: Callable[[dict[str, Any]], RecordedResponse | None],
         answer_of: Callable[[RecordedResponse], Transcript]) -> tuple[int, list[Transcript]]:
    """``drive``, also returning the answers received."""
    answers: list[Transcript] = []
    for n, turn in enumerate(conv.turns):
        body = copy.deepcopy(turn)
        for index, answer in zip(conv.answer_at[n], answers, strict=False):
            write_answer(body, index, answer)
        resp = send(body)
        if resp is None:
            return n, answers
        answers.append(answer_of(resp))
    return len(conv.turns), answers


def fits_shape(conv: Conversation, turn: int, answers: list[Transcript]) -> bool:
    """Whether the answers received before ``turn`` can be written into that turn's recorded
    shape: the same number of tool calls as the recorded messages. When not, a real client
    would have sent a different next turn (one result per call), which this driver cannot
    build."""
    messages = conv.turns[turn]["messages"]
    return all(len(messages[index].get("tool_calls") or []) == len(answer.tool_calls)
               for index, answer in zip(conv.answer_at[turn], answers, strict=False))
