"""A loopback WebSocket server that replays recorded conversations (``websocket_replay.Replay``).

mitmproxy cannot answer a WebSocket upgrade itself: its WebSocket layer writes the client's
close to a server connection that must exist. A replayed handshake is therefore pointed at this
server, on 127.0.0.1 and a free port, like the pacer (``loopback``): each conversation is
registered under a one-time token the flow carries in a header, and mitmproxy relays the frames
as for any upstream. The protocol is spoken by wsproto (sans-IO, a mitmproxy dependency) over
asyncio.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import ProtocolError

from proxy_addon.bodies import websocket
from proxy_addon.serving import websocket_replay
from proxy_addon.serving.loopback import LoopbackServer
from proxy_addon.serving.websocket_replay import Replay, Reply

log = logging.getLogger(__name__)

TOKEN_HEADER = "x-cassette-websocket"
_READ_SIZE = 65536
# The recorded answer's headers that belong to the handshake itself, made anew for each one.
_HANDSHAKE_HEADERS = frozenset(
    {
        "upgrade",
        "connection",
        "sec-websocket-accept",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "content-length",
        "transfer-encoding",
    }
)
# Codes that mean "no close frame came" (RFC 6455 7.4.1): replayed by dropping the connection.
_NOT_SENDABLE = frozenset({1005, 1006, 1015})


@dataclass(slots=True)
class Registration:
    """One replay waiting for its connection: the conversation, the recorded 101 headers, and
    the pace of the server's messages (0: at once)."""

    replay: Replay
    headers: list[list[str]]
    pace: float


class WebSocketServer(LoopbackServer[Registration]):
    """The server, started on first use. ``on_miss(message)`` is called for each client
    message no recording has; ``on_fault(error)`` for a fault inside a replay."""

    token_header = TOKEN_HEADER

    def __init__(
        self, on_miss: Callable[[str], None], on_fault: Callable[[Exception], None]
    ) -> None:
        super().__init__(on_fault)
        self._on_miss = on_miss

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        session: _Connection | None = None
        try:
            request = await _handshake(ws, reader)
            if request is None:
                return
            token = next(
                (
                    v.decode("latin-1")
                    for k, v in request.extra_headers
                    if k.decode("latin-1").lower() == self.token_header
                ),
                "",
            )
            registration = self.take(token)
            if registration is None:
                writer.write(ws.send(RejectConnection(status_code=404)))
                return
            writer.write(ws.send(_accept(request, registration.headers)))
            session = _Connection(ws, writer, registration, self._on_miss, self._on_fault)
            await session.run(reader)
        except (ConnectionError, ProtocolError, asyncio.IncompleteReadError) as e:
            log.debug("cassette websocket replay: connection ended: %s", e)
        except Exception as e:  # noqa: BLE001 - a fault ends this replay, never the proxy
            self._on_fault(e)
            if session is not None:
                session.fail()
        finally:
            if session is not None:
                session.stop()
            writer.close()


async def _handshake(ws: WSConnection, reader: asyncio.StreamReader) -> Request | None:
    """The upgrade request, or None when the connection ends first."""
    while True:
        for event in ws.events():
            if isinstance(event, Request):
                return event
        data = await reader.read(_READ_SIZE)
        if not data:
            return None
        ws.receive_data(data)


def _accept(request: Request, headers: list[list[str]]) -> AcceptConnection:
    """The 101 with the recorded headers, and the recorded subprotocol when the client offers
    it (the handshake's own headers are made anew by wsproto)."""
    recorded = {k.lower(): v for k, v in headers}
    subprotocol = recorded.get("sec-websocket-protocol")
    return AcceptConnection(
        subprotocol=subprotocol if subprotocol in request.subprotocols else None,
        extra_headers=[
            (k.encode(), v.encode()) for k, v in headers if k.lower() not in _HANDSHAKE_HEADERS
        ],
    )


class _Connection:
    """One replayed connection: reads the client's messages, and sends the answers from a
    queue in order, each at its time (the recorded gap times the pace)."""

    def __init__(
        self,
        ws: WSConnection,
        writer: asyncio.StreamWriter,
        registration: Registration,
        on_miss: Callable[[str], None],
        on_fault: Callable[[Exception], None],
    ) -> None:
        self.ws = ws
        self.writer = writer
        self.replay = registration.replay
        self.pace = registration.pace
        self.on_miss = on_miss
        self.on_fault = on_fault
        self.queue: asyncio.Queue[tuple[float, Message | CloseConnection | None]] = asyncio.Queue()
        self.sender = asyncio.ensure_future(self._send())
        self.parts: list[str | bytes] = []  # a fragmented message so far
        # the recorded close, due when the recording has ended, unless the client says more
        self.close_timer: asyncio.TimerHandle | None = None

    async def run(self, reader: asyncio.StreamReader) -> None:
        self._schedule(self.replay.opening(), time.monotonic())
        while True:
            data = await reader.read(_READ_SIZE)
            self.ws.receive_data(data or None)
            for event in self.ws.events():
                if isinstance(event, (TextMessage, BytesMessage)):
                    self._received(event)
                elif isinstance(event, Ping):
                    self.writer.write(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    if self.ws.state is ConnectionState.REMOTE_CLOSING:
                        self.writer.write(self.ws.send(event.response()))
                    return
            if not data:
                return

    def _received(self, event: TextMessage | BytesMessage) -> None:
        if self.replay.over:  # a miss ended it: what comes after is not kept
            return
        self.parts.append(bytes(event.data) if isinstance(event.data, bytearray) else event.data)
        if not event.message_finished:
            return
        if self.close_timer is not None:  # more than was recorded: a miss, not the close
            self.close_timer.cancel()
        if isinstance(event, TextMessage):
            content, is_text = "".join(self.parts).encode(), True  # type: ignore[arg-type]
        else:
            content, is_text = b"".join(self.parts), False  # type: ignore[arg-type]
        self.parts = []
        reply = self.replay.receive(websocket.payload_of(content, is_text))
        now = time.monotonic()
        if reply.miss is not None:
            self.on_miss(reply.miss.message)
            self.queue.put_nowait(
                (
                    now,
                    TextMessage(
                        websocket_replay.error_event(reply.miss, self.replay.received).decode()
                    ),
                )
            )
            self.queue.put_nowait(
                (
                    now,
                    CloseConnection(
                        websocket_replay.MISS_CLOSE_CODE,
                        websocket_replay.miss_close_reason(reply.miss),
                    ),
                )
            )
            return
        self._schedule(reply, now)

    def _schedule(self, reply: Reply, arrived: float) -> None:
        for message in reply.messages:
            data, is_text = websocket.wire_payload(message.payload)
            event: Message = TextMessage(data.decode()) if is_text else BytesMessage(data)
            self.queue.put_nowait((arrived + max(0.0, message.t - reply.anchor) * self.pace, event))
        if reply.close is not None:
            close = reply.close
            event_or_drop = (
                None if close.code in _NOT_SENDABLE else CloseConnection(close.code, close.reason)
            )
            self.close_timer = asyncio.get_running_loop().call_later(
                max(0.0, arrived + reply.close_delay(self.pace) - time.monotonic()),
                self.queue.put_nowait,
                (0.0, event_or_drop),
            )

    async def _send(self) -> None:
        """Send queued events in order, each not before its time; ``None`` drops the
        connection (a recorded close with no close frame)."""
        try:
            await self._send_queued()
        except (ConnectionError, ProtocolError) as e:
            log.debug("cassette websocket replay: connection ended while sending: %s", e)
        except Exception as e:  # noqa: BLE001 - a fault ends this replay, never the proxy
            self.on_fault(e)
            self.fail()

    async def _send_queued(self) -> None:
        while True:
            at, event = await self.queue.get()
            delay = at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.ws.state is not ConnectionState.OPEN:
                return
            if event is None:
                self.writer.transport.abort()
                return
            self.writer.write(self.ws.send(event))
            await self.writer.drain()

    def fail(self) -> None:
        """A fault inside the replay: close with 1011 (internal error) if still open."""
        if self.ws.state is ConnectionState.OPEN:
            self.writer.write(self.ws.send(CloseConnection(1011, "cassette: internal error")))

    def stop(self) -> None:
        self.sender.cancel()
        if self.close_timer is not None:
            self.close_timer.cancel()
