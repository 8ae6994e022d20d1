"""What scripts/bench replays and records: recordings shaped like real provider traffic.

A chat answer carries the headers OpenAI sends (date, server, request id, rate limits...); a
stream is N ``chat.completion.chunk`` events with a usage chunk and ``[DONE]``, as with
``stream_options.include_usage``. (The corpora of the scale runs are recorded through the proxy:
``bench_corpus``.)
"""

from __future__ import annotations

from typing import Any

from proxy_addon.bodies.sse import Event
from proxy_addon.model import Body, RecordedRequest, RecordedResponse, Recording, Stream
from proxy_addon.redaction.secret_rules import REDACTED

URL = "http://api.openai.com/v1/chat/completions"
RECORDED_HEADERS = [
    ["date", "Thu, 26 Nov 2026 07:30:39 GMT"],
    ["server", "cloudflare"],
    ["openai-organization", "user-bench"],
    ["openai-processing-ms", "123"],
    ["openai-version", "2020-10-01"],
    ["x-ratelimit-limit-requests", "10000"],
    ["x-ratelimit-remaining-requests", "9999"],
    ["x-ratelimit-reset-requests", "6ms"],
    ["x-request-id", "req_8f2b1c0d9e7a6b5c4d3e2f1a"],
    ["cf-ray", "8e2f1a2b3c4d-SJC"],
]


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-AbC123dEf456",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-4o-2024-08-06",
        "system_fingerprint": "fp_bench",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def stream_events(n: int, gap: float = 0.01) -> list[Event]:
    """``n`` events: a role chunk, content chunks, a finish chunk, a usage chunk, [DONE]."""
    events = [Event(data=_chunk({"role": "assistant", "content": ""}), t=0.0)]
    events += [Event(data=_chunk({"content": f" word{i}"}), t=gap * (i + 1)) for i in range(n - 4)]
    events.append(Event(data=_chunk({}, "stop"), t=gap * (n - 3)))
    usage = {
        **_chunk({}),
        "choices": [],
        "usage": {"prompt_tokens": 8, "completion_tokens": n - 4, "total_tokens": n + 4},
    }
    events.append(Event(data=usage, t=gap * (n - 2)))
    events.append(Event(data="[DONE]", t=gap * (n - 1)))
    return events


def chat_recording(prompt: str, events: int = 0, gap: float = 0.01) -> Recording:
    """A recorded chat completion: a plain answer, or a stream of ``events`` events."""
    body: dict[str, Any] = {"model": "gpt-4o", "messages": [{"role": "user", "content": prompt}]}
    if events:
        body.update(stream=True, stream_options={"include_usage": True})
        resp = RecordedResponse(
            200,
            [["content-type", "text/event-stream; charset=utf-8"], *RECORDED_HEADERS],
            stream=Stream("sse", stream_events(events, gap)),
        )
    else:
        resp = RecordedResponse(
            200,
            [["content-type", "application/json"], *RECORDED_HEADERS],
            body=Body(
                "json",
                {
                    "id": "chatcmpl-bench",
                    "object": "chat.completion",
                    "created": 1700000000,
                    "model": "gpt-4o",
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": "word " * 20},
                        }
                    ],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 20, "total_tokens": 25},
                },
            ),
        )
    # as the recorder writes it: the key's header kept, its value scrubbed
    request = RecordedRequest(
        "POST",
        URL.replace("http:", "https:"),
        {"authorization": REDACTED, "content-type": "application/json"},
        Body("json", body),
    )
    return Recording(request, [resp])
