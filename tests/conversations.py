"""The multi-turn conversations of a llama-stack corpus, read from the recorded files alone.

Nothing here uses the project's code: the files are read as raw JSON, answers are read from
the JSON a client receives (a completion's message; a stream's events, accumulated the way a
chat client does: content concatenated, tool calls gathered by index), and a conversation is
played by sending each recorded request exactly as it was recorded, through the real SDK.

A follow-up request (one whose messages hold assistant answers) is a conversation: for each of
its assistant messages there is a recorded request made of the messages before it, whose
recorded answer is that message. Playing it checks, turn by turn, that the answer the proxy
gave is the one the next recorded turn carries: if the proxy chose, among several recordings of
a first turn, an answer whose follow-up was never recorded, the check fails there.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

Answer = tuple[str, tuple[tuple[str | None, str | None, str], ...]]  # text, tool calls


def same(a: Answer, b: Answer) -> bool:
    """Whether two answers say the same (text compared without surrounding blanks)."""
    return a[0].strip() == b[0].strip() and a[1] == b[1]


@dataclass
class Turn:
    base_url: str  # what the client's SDK had as base URL, e.g. https://api.openai.com/v1
    call_args: dict[str, Any]  # the SDK call's arguments as recorded
    answer: Answer | None  # the recorded answer


@dataclass
class Conversation:
    test_id: str | None
    turns: list[Turn]  # first turn first, the follow-up last
    expected: list[Answer]  # the answer each turn but the last must get (the next one carries it)


def answer_of_message(message: dict[str, Any]) -> Answer:
    """An assistant message as a client wrote it into its next request."""
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    calls = tuple(
        (c.get("id"), c["function"].get("name"), c["function"].get("arguments") or "")
        for c in message.get("tool_calls") or []
        if isinstance(c.get("function"), dict)
    )
    return content or "", calls


def answer_of_completion(completion: dict[str, Any]) -> Answer:
    """The assistant message of a chat completion, as JSON."""
    return answer_of_message(completion["choices"][0]["message"])


def answer_of_chunks(chunks: list[dict[str, Any]]) -> Answer:
    """The assistant message a stream of chunks (as JSON) adds up to: content deltas
    concatenated; tool calls by their index, the id and name from the delta that has them,
    arguments concatenated."""
    text: list[str] = []
    calls: dict[int, list[Any]] = {}
    for chunk in chunks:
        for choice in chunk["choices"][:1]:
            delta = choice["delta"]
            text.append(delta.get("content") or "")
            for tc in delta.get("tool_calls") or []:
                call = calls.setdefault(tc["index"], [None, None, ""])
                call[0] = tc.get("id") or call[0]
                if tc.get("function") is not None:
                    call[1] = tc["function"].get("name") or call[1]
                    call[2] += tc["function"].get("arguments") or ""
    return "".join(text), tuple(tuple(calls[i]) for i in sorted(calls))  # type: ignore[misc]


def stream_chunks(body: bytes) -> list[dict[str, Any]]:
    """The JSON of each event of an OpenAI server-sent-event stream, as a client reads them."""
    return [
        orjson.loads(line[len(b"data:") :])
        for line in body.splitlines()
        if line.startswith(b"data:") and line[len(b"data:") :].strip() != b"[DONE]"
    ]


def _recorded_answer(response: dict[str, Any]) -> Answer | None:
    if response.get("is_exception"):
        return None
    body = response.get("body")
    try:
        if response.get("is_streaming"):
            return answer_of_chunks(
                [c["__data__"] for c in body if isinstance(c, dict) and "__data__" in c]
            )
        if isinstance(body, dict) and "__data__" in body:
            return answer_of_completion(body["__data__"])
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None  # not an OpenAI chat answer (another provider's shape)
    return None


def read_turns(corpus: Path) -> list[tuple[str | None, Turn]]:
    """Every recorded chat-completion call of the corpus, with its test id."""
    out = []
    for path in sorted(corpus.rglob("*.json")):
        doc = orjson.loads(path.read_bytes())
        req = doc.get("request") or {}
        endpoint, url, body = req.get("endpoint"), req.get("url"), req.get("body")
        if (
            endpoint != "/v1/chat/completions"
            or not isinstance(url, str)
            or not isinstance(body, dict)
            or not url.endswith(endpoint)
        ):
            continue
        # the recorder wrote base URL + endpoint: https://api.openai.com/v1 + /v1/chat/completions
        turn = Turn(url[: -len(endpoint)], body, _recorded_answer(doc["response"]))
        out.append((doc.get("test_id"), turn))
    return out


def _messages_key(base_url: str, messages: list[Any]) -> bytes:
    return orjson.dumps([base_url, messages], option=orjson.OPT_SORT_KEYS)


def _normalised(answer: Answer) -> Answer:
    return answer[0].strip(), answer[1]


def find_conversations(corpus: Path) -> list[Conversation]:
    """Every recorded follow-up whose earlier turns were all recorded, preferring earlier turns
    recorded by the follow-up's own test."""
    turns = read_turns(corpus)
    by_prefix: dict[tuple[bytes, Answer], list[tuple[str | None, Turn]]] = {}
    for test_id, turn in turns:
        if turn.answer is not None:
            key = _messages_key(turn.base_url, turn.call_args.get("messages") or [])
            by_prefix.setdefault((key, _normalised(turn.answer)), []).append((test_id, turn))
    conversations = []
    for test_id, last in turns:
        messages = last.call_args.get("messages") or []
        answers = [
            (i, answer_of_message(m))
            for i, m in enumerate(messages)
            if isinstance(m, dict) and m.get("role") == "assistant"
        ]
        if not answers:
            continue
        earlier = []
        for index, answer in answers:
            found = by_prefix.get(
                (_messages_key(last.base_url, messages[:index]), _normalised(answer)), []
            )
            own = [t for tid, t in found if tid == test_id]
            if not found:
                break
            earlier.append((own or [found[0][1]])[0])
        else:
            conversations.append(Conversation(test_id, [*earlier, last], [a for _, a in answers]))
    return conversations


@dataclass
class Played:
    turns_answered: int  # requests answered (not an error)
    incoherent: list[str]  # turns whose answer is not the one the next turn carries

    def ok(self, conv: Conversation) -> bool:
        return self.turns_answered == len(conv.turns) and not self.incoherent


def play(conv: Conversation, send: Callable[[Turn], Answer]) -> Played:
    """Send every turn as recorded (each is recorded, so each must be answered); ``send``
    returns the answer received or raises. Each answer but the last's is compared with the one
    the next recorded turn carries."""
    answered = 0
    incoherent = []
    for n, turn in enumerate(conv.turns):
        try:
            got = send(turn)
        except Exception as e:  # noqa: BLE001 - reported to the test as data
            incoherent.append(f"turn {n}: {type(e).__name__}: {str(e)[:300]}")
            continue
        answered += 1
        if n < len(conv.expected) and not same(got, conv.expected[n]):
            incoherent.append(
                f"turn {n}: answered {got!r:.200}, the next turn carries {conv.expected[n]!r:.200}"
            )
    return Played(answered, incoherent)


def with_answers(turn: Turn, received: list[Answer]) -> dict[str, Any] | None:
    """The turn's call arguments as a client that got ``received`` would send them: each earlier
    assistant message replaced by the answer the client got, in the message's own shape (a
    string or one text part), tool calls renamed in the later tool messages too. None when an
    answer has another number of tool calls than the recorded message: the client would then
    send a different set of tool results, which cannot be built from the recording."""
    args = copy.deepcopy(turn.call_args)
    messages = args["messages"]
    renamed: dict[str, str] = {}
    indices = [
        i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "assistant"
    ]
    for index, (text, calls) in zip(indices, received, strict=False):
        message = messages[index]
        recorded_calls = message.get("tool_calls") or []
        if len(recorded_calls) != len(calls):
            return None
        content = message.get("content")
        if isinstance(content, list):
            message["content"] = [{"type": "text", "text": text}]
        elif isinstance(content, str) or text:
            message["content"] = text
        for call, (call_id, name, arguments) in zip(recorded_calls, calls, strict=True):
            if call.get("id") and call_id:
                renamed[call["id"]] = call_id
                call["id"] = call_id
            call["function"]["name"] = name
            call["function"]["arguments"] = arguments
    for message in messages:
        if isinstance(message, dict) and message.get("tool_call_id") in renamed:
            message["tool_call_id"] = renamed[message["tool_call_id"]]
    return args


def play_as_client(conv: Conversation, send: Callable[[dict[str, Any]], Answer]) -> str:
    """Send the first turn as recorded and each next turn with the answers received written in,
    as a chat client does. Returns "answered" (every turn answered), "unbuildable" (an answer
    had another number of tool calls than the recording, see ``with_answers``) or the error."""
    received: list[Answer] = []
    for n, turn in enumerate(conv.turns):
        args = turn.call_args if n == 0 else with_answers(turn, received)
        if args is None:
            return "unbuildable"
        try:
            received.append(send(args))
        except Exception as e:  # noqa: BLE001 - reported to the test as data
            return f"turn {n}: {type(e).__name__}: {str(e)[:300]}"
    return "answered"
