"""The record hooks: forward the flows marked for recording, tap their streams live, and save
each whole exchange in its place."""

from __future__ import annotations

import time
from typing import Any

from mitmproxy import http
from mitmproxy.connection import ConnectionState

from proxy_addon.bodies.sse import asks_for_stream
from proxy_addon.bodies.streams import stream_format
from proxy_addon.bodies.taps import BodyTap, StreamCapture, StreamTap
from proxy_addon.formats import exchange
from proxy_addon.mitm.flow import FlowState, body_of, flow_state, shown_url
from proxy_addon.mitm.state import State, log
from proxy_addon.model import Body, RecordedResponse, Stream


def client_hung_up(flow: http.HTTPFlow) -> bool:
    """Whether the client closed its side, told by its connection's state when the ``error``
    hook runs (not by the wording of mitmproxy's message). An HTTP/2 client that cancels one
    stream keeps its connection open, and so counts as an upstream cut."""
    return not flow.client_conn.state & ConnectionState.CAN_READ


class RecordHooks:
    def __init__(self, state: State) -> None:
        self.state = state

    def request(self, flow: http.HTTPFlow) -> None:
        st = flow_state(flow, "record")
        if st is None:
            return
        store = self.state.store
        assert store is not None
        req = flow.request
        st.request = exchange.recorded_request(
            req.method, req.pretty_url, req.headers.items(multi=True), body_of(req), st.secrets
        )
        st.key, st.slot = store.recorder.begin(
            st.canonical, st.request, st.test_id, st.test_dir, into=st.refresh, secrets=st.secrets
        )
        if not exchange.signed(req.headers):  # a signed request goes on exactly as it came
            req.anticomp()  # ask for plain bytes, so cassettes hold readable text

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        st = flow_state(flow, "record")
        if st is None or flow.response is None:
            return
        st.headers_at = time.monotonic()
        fmt = stream_format(flow.response.headers.get("content-type"))
        if fmt is None:
            if asks_for_stream(st.canonical.path, st.canonical.body):
                st.body_tap = BodyTap()
                flow.response.stream = st.body_tap
            return
        try:
            tap = StreamTap(
                fmt,
                flow.response.headers.get("content-encoding", ""),
                st.headers_at,
                self.state.settings.max_file_bytes,
            )
        except ValueError as e:  # an encoding we cannot decode: pass it on, do not record it
            log.warning(
                "cassette: not recording %s: %s",
                shown_url(flow, self.state.settings.rules.secrets),
                e,
            )
            flow.response.stream = True
            st.action = "pass"
            self._abandon(st)
            return
        st.capture = tap.capture
        flow.response.stream = tap

    def response(self, flow: http.HTTPFlow) -> None:
        st = flow_state(flow, "record")
        if st is None or flow.response is None or flow.websocket is not None:
            return  # a WebSocket is saved when its conversation ends (mitm/websocket.py)
        if st.capture is not None and not st.capture.upstream_finished:  # the tap never saw the end
            st.capture.finish(time.monotonic() - st.headers_at)
        self._save(flow, st, st.capture)

    def error(self, flow: http.HTTPFlow) -> None:
        st = flow_state(flow, "record")
        if st is None:
            return
        capture = st.capture
        reason = flow.error.msg if flow.error else "error"
        if capture is not None and flow.response is not None:
            if capture.complete:
                # SDKs hang up as soon as they read the end marker, often before the last HTTP
                # chunk: mitmproxy reports an error, but the stream is whole.
                self._save(flow, st, capture)
                return
            if not client_hung_up(flow):
                # The provider cut the stream: that is what it did, and a replay reproduces the
                # cut, so a client's error handling can be tested. Marked incomplete.
                log.warning(
                    "cassette: %s %s was cut off by the upstream (%s); saved as incomplete",
                    flow.request.method,
                    shown_url(flow, self.state.settings.rules.secrets),
                    reason,
                )
                capture.cut = capture.cut or f"the upstream ended it early: {reason}"
                self._save(flow, st, capture)
                return
        left = client_hung_up(flow)
        # the client left, or the upstream never answered whole (refused, reset, timed out)
        self.state.counters.add("abandoned" if left else "upstream_failed")
        self._abandon(st)
        log.warning(
            "cassette: not saving %s %s: %s%s",
            flow.request.method,
            shown_url(flow, self.state.settings.rules.secrets),
            reason,
            " before the response was complete" if left else " (the upstream failed)",
        )

    def _abandon(self, st: FlowState) -> None:
        store = self.state.store
        if store is not None and st.key is not None and st.slot is not None:
            store.recorder.abandon(st.key, st.slot)

    def _save(self, flow: http.HTTPFlow, st: FlowState, capture: StreamCapture | None) -> None:
        resp = flow.response
        assert resp is not None
        if capture is not None:
            save(
                self.state,
                flow,
                st,
                stream=Stream(
                    capture.format, capture.events, complete=capture.complete, cut=capture.cut
                ),
            )
        else:
            tapped = b"".join(st.body_tap.chunks) if st.body_tap is not None else None
            raw = body_of(resp, tapped, self.state.settings.max_file_bytes)
            save(self.state, flow, st, body=Body.from_bytes(raw, resp.headers.get("content-type")))


def save(state: State, flow: http.HTTPFlow, st: FlowState, **content: Any) -> None:
    """Hand a whole response (its ``body``, ``stream`` or ``websocket``) to the recorder, which
    writes the cassette in the background; a path the layout refuses is counted and logged."""
    store, resp = state.store, flow.response
    assert store is not None and resp is not None and st.key is not None and st.slot is not None
    recorded = RecordedResponse(
        status=resp.status_code,
        headers=exchange.response_headers(resp.headers.items(multi=True)),
        **content,
    )
    try:
        store.recorder.finish(st.key, st.slot, recorded)
    except (OSError, ValueError) as e:  # the layout refused the path
        state.counters.add("write_errors")
        log.error(
            "cassette: could not record %s %s: %s",
            flow.request.method,
            shown_url(flow, state.settings.rules.secrets),
            e,
        )
