"""A loopback HTTP server that writes a recorded stream's events at their recorded offsets.

mitmproxy sends a response made in the ``request`` hook in one piece; there is no way to push
its body in chunks. A paced replay (or a recorded cut, replayed as a real cut) therefore points
the flow at this server, which mitmproxy streams from like any upstream. Each response is
registered under a one-time token that the flow carries in a header (``loopback``). HTTP is
spoken by h11.
"""

from __future__ import annotations

import asyncio
import logging
import time

import h11

from proxy_addon.bodies.streams import frame_event
from proxy_addon.model import RecordedResponse
from proxy_addon.serving.loopback import LoopbackServer
from proxy_addon.serving.wire import wire_headers

log = logging.getLogger(__name__)

TOKEN_HEADER = "x-cassette-pacer"
_READ_SIZE = 65536


class Pacer(LoopbackServer[tuple[RecordedResponse, float]]):
    """The server, started on first use on 127.0.0.1 and a free port. What is registered: a
    response and the pace to write it at (0: at once)."""

    token_header = TOKEN_HEADER

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await self._read_request(conn, reader)
                if request is None:
                    return
                token = dict(request.headers).get(self.token_header.encode(), b"").decode("latin-1")
                item = self.take(token)
                if item is None:
                    writer.write(
                        conn.send(
                            h11.Response(
                                status_code=404,
                                headers=[(b"content-length", b"0")],
                                reason=b"Not Found",
                            )
                        )
                    )
                    writer.write(conn.send(h11.EndOfMessage()))
                elif not await self._write(conn, writer, *item):
                    return  # a recorded cut: close before the end, as the upstream did
                await writer.drain()
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError, asyncio.IncompleteReadError) as e:
            log.debug("cassette pacer: connection ended: %s", e)
        except Exception as e:  # noqa: BLE001 - a fault ends this answer, never the proxy
            self._on_fault(e)
        finally:
            writer.close()

    @staticmethod
    async def _read_request(
        conn: h11.Connection, reader: asyncio.StreamReader
    ) -> h11.Request | None:
        """The next request, its body (chunked or not) read and dropped; None at the end."""
        request = None
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(_READ_SIZE))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.EndOfMessage):
                return request
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None

    async def _write(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        resp: RecordedResponse,
        pace: float,
    ) -> bool:
        """Write one recorded stream; False when the connection must close (a recorded cut)."""
        assert resp.stream is not None  # only streams are paced
        headers = wire_headers(resp) + [(b"transfer-encoding", b"chunked")]
        writer.write(conn.send(h11.Response(status_code=resp.status, headers=headers, reason=b"")))
        await writer.drain()
        start = time.monotonic()
        fmt = resp.stream.format
        for ev in resp.stream.events:
            delay = start + ev.t * pace - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(conn.send(h11.Data(data=frame_event(fmt, ev))))
            await writer.drain()
        if not resp.stream.complete:
            return False
        writer.write(conn.send(h11.EndOfMessage()))
        return True
