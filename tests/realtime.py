"""A stand-in for the OpenAI Realtime API on 127.0.0.1, plain ws or TLS, built with
``websockets`` (not with the proxy's code): it speaks the GA event names the ``openai`` SDK
parses, answers each user message with text deltas that depend on it, echoes binary messages
(an audio chunk) transformed, and counts the TCP connections it accepts.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import ssl
import threading
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

MODEL = "gpt-realtime"


# Two user messages it answers with a secret, as a model may: the caller's own key, and JSON
# holding a secret it made up (a gateway minting a client secret).
SAY_MY_KEY = "say my key"
GIVE_A_SECRET = "give me a client secret"
MINTED_SECRET = "fake-rt-minted-cs-3002"


def answer_for(text: str, authorization: str = "") -> str:
    """What the stand-in answers to a user message: the test knows it without the proxy."""
    if text == SAY_MY_KEY:
        return f"Your key is {authorization.removeprefix('Bearer ')}, keep it safe."
    if text == GIVE_A_SECRET:
        return json.dumps({"client_secret": MINTED_SECRET, "expires_at": 1700000000})
    return f"You said: {text.upper()}"


def binary_answer(chunk: bytes) -> bytes:
    """The stand-in's answer to a binary message: the bytes reversed, framed by markers."""
    return b"\x00AUDIO\xff" + chunk[::-1]


class RealtimeStandIn:
    """Started in a thread with its own event loop; ``stop()`` closes it and its port."""

    def __init__(self, cert: tuple[Path, Path] | None = None, port: int = 0) -> None:
        self.cert = cert
        self.port = port
        self.connections = 0  # TCP connections accepted
        self.received: list[Any] = []  # every client message, parsed JSON or bytes
        self._ids = itertools.count(1)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._stop: asyncio.Future[None] | None = None
        self._serving: asyncio.Future[None] | None = None

    @property
    def base_url(self) -> str:
        """What the SDK's ``base_url`` is set to: http gives ws://, https gives wss://."""
        return f"{'https' if self.cert else 'http'}://127.0.0.1:{self.port}/v1"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.cert else 'ws'}://127.0.0.1:{self.port}/v1/realtime?model={MODEL}"

    def start(self) -> RealtimeStandIn:
        self._thread.start()
        ready = asyncio.run_coroutine_threadsafe(self._open(), self._loop)
        self.port = ready.result(10)
        return self

    def stop(self) -> None:
        if self._stop is not None and self._serving is not None:
            stop, serving = self._stop, self._serving

            async def closed() -> None:  # the server closed, its port released
                stop.set_result(None)
                await serving

            asyncio.run_coroutine_threadsafe(closed(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _open(self) -> int:
        context = None
        if self.cert:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*map(str, self.cert))
        stand_in = self

        class Counting(ServerConnection):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                stand_in.connections += 1
                super().connection_made(transport)  # type: ignore[arg-type]

        server = await serve(
            self._handle, "127.0.0.1", self.port, ssl=context, create_connection=Counting
        )
        self._stop = asyncio.get_running_loop().create_future()
        self._serving = asyncio.ensure_future(self._serve_until_stopped(server))
        return server.sockets[0].getsockname()[1]

    async def _serve_until_stopped(self, server: Any) -> None:
        assert self._stop is not None
        await self._stop
        server.close()
        await server.wait_closed()

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):04d}"

    async def _handle(self, ws: ServerConnection) -> None:
        session: dict[str, Any] = {
            "type": "realtime",
            "id": self._id("sess"),
            "model": MODEL,
            "object": "realtime.session",
            "output_modalities": ["audio"],
        }
        items: list[dict[str, Any]] = []

        async def emit(event: dict[str, Any]) -> None:
            await ws.send(json.dumps({"event_id": self._id("event"), **event}))

        await emit({"type": "session.created", "session": session})
        async for raw in ws:
            if isinstance(raw, bytes):
                self.received.append(raw)
                await ws.send(binary_answer(raw))
                continue
            try:
                event = json.loads(raw)
            except ValueError:  # plain text: echoed
                self.received.append(raw)
                await ws.send(f"echo: {raw}")
                continue
            self.received.append(event)
            kind = event.get("type")
            if kind == "session.update":
                session.update(event.get("session") or {})
                await emit({"type": "session.updated", "session": session})
            elif kind == "conversation.item.create":
                item = {
                    **event["item"],
                    "id": event["item"].get("id") or self._id("item"),
                    "status": "completed",
                }
                items.append(item)
                await emit({"type": "conversation.item.added", "item": item})
                await emit({"type": "conversation.item.done", "item": item})
            elif kind == "response.create":
                await self._respond(
                    emit, items, session, ws.request.headers.get("Authorization", "")
                )
            else:
                await emit(
                    {
                        "type": "error",
                        "error": {
                            "type": "invalid_request_error",
                            "code": "unknown_event",
                            "message": f"Unknown event type {kind!r}",
                            "param": "type",
                            "event_id": event.get("event_id"),
                        },
                    }
                )

    async def _respond(
        self, emit: Any, items: list[dict[str, Any]], session: dict[str, Any], authorization: str
    ) -> None:
        rid, out_id = self._id("resp"), self._id("item")
        response = {
            "id": rid,
            "object": "realtime.response",
            "status": "in_progress",
            "output": [],
            "output_modalities": session["output_modalities"],
        }
        where = {"response_id": rid, "item_id": out_id, "output_index": 0, "content_index": 0}
        last = next(
            c["text"]
            for item in reversed(items)
            for c in item.get("content", [])
            if c.get("type") == "input_text"
        )
        text = answer_for(last, authorization)
        await emit({"type": "response.created", "response": response})
        await emit(
            {
                "type": "response.output_item.added",
                "response_id": rid,
                "output_index": 0,
                "item": {
                    "id": out_id,
                    "type": "message",
                    "role": "assistant",
                    "status": "in_progress",
                    "content": [],
                },
            }
        )
        for i in range(0, len(text), 5):
            await emit({"type": "response.output_text.delta", **where, "delta": text[i : i + 5]})
        await emit({"type": "response.output_text.done", **where, "text": text})
        done = {
            "id": out_id,
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": text}],
        }
        items.append(done)
        await emit(
            {
                "type": "response.output_item.done",
                "response_id": rid,
                "output_index": 0,
                "item": done,
            }
        )
        await emit(
            {
                "type": "response.done",
                "response": {
                    **response,
                    "status": "completed",
                    "output": [done],
                    "usage": {"total_tokens": 7, "input_tokens": 3, "output_tokens": 4},
                },
            }
        )
