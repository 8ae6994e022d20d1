"""The WebSocket hooks, thin: record a conversation message by message, and point a replayed
handshake at the addon's loopback WebSocket server.

A handshake is matched and counted like any request (``mitm/replay.py``, ``mitm/record.py``);
what follows the 101 is ``proxy_addon.websocket``'s (capture, matching, replay state) and
``proxy_addon.websocket_server``'s (the protocol on the replay side).
"""

from __future__ import annotations

import time

from mitmproxy import http

from proxy_addon.bodies.websocket import Capture
from proxy_addon.mitm.flow import FlowState, flow_state, send_to_loopback
from proxy_addon.mitm.record import save
from proxy_addon.mitm.state import State, log
from proxy_addon.serving.websocket_replay import Replay
from proxy_addon.serving.websocket_server import Registration, WebSocketServer
from proxy_addon.store import Hit


def websocket_server(state: State) -> WebSocketServer:
    """The replay server, reporting misses and faults to the run's counters."""
    return WebSocketServer(state.miss, state.fault_reporter("replaying a WebSocket"))


async def answer_websocket(
    flow: http.HTTPFlow, st: FlowState, hit: Hit, server: WebSocketServer, state: State
) -> None:
    """Point a replayed handshake at the loopback server, with every recorded conversation of
    this handshake (the one in turn first) to follow the client's messages."""
    responses = hit.entry.recording.responses
    order = [hit.index] + [i for i in range(len(responses)) if i != hit.index]
    recordings = [ws for ws in (responses[i].websocket for i in order) if ws is not None]
    where = f"{st.canonical.describe()} ({hit.entry.path})"
    replay = Replay(recordings, state.settings.rules, where, st.secrets, state.settings.interface)
    await send_to_loopback(
        flow, st, server, Registration(replay, hit.response.headers, state.settings.pace), state
    )


class WebSocketHooks:
    """Records the conversations of handshakes marked for recording; the file is written when
    the conversation ends, as one more response of its handshake's cassette."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.open: set[str] = set()  # flows whose conversation is being recorded

    def websocket_start(self, flow: http.HTTPFlow) -> None:
        st = flow_state(flow, "record")
        if st is None or flow.response is None:
            return
        st.websocket = Capture(flow.response.timestamp_end or time.time())
        self.open.add(flow.id)

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        st = flow_state(flow, "record")
        if st is None or st.websocket is None or flow.websocket is None:
            return
        message = flow.websocket.messages[-1]
        st.websocket.message(
            message.from_client, message.is_text, message.content, message.timestamp
        )

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        self.open.discard(flow.id)
        st = flow_state(flow, "record")
        if st is None or st.websocket is None or flow.websocket is None or flow.response is None:
            return
        ws = flow.websocket
        st.websocket.close(
            bool(ws.closed_by_client),
            ws.close_code or 1005,
            ws.close_reason or "",
            ws.timestamp_end or time.time(),
        )
        save(self.state, flow, st, websocket=st.websocket.conversation)

    def done(self) -> None:
        if self.open:
            log.warning(
                "cassette: %d WebSocket conversations were still open when the proxy "
                "stopped: not recorded",
                len(self.open),
            )
