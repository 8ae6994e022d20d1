"""The replay hooks: answer a request from the store, or decide it is recorded, or a miss."""

from __future__ import annotations

from mitmproxy import http

from proxy_addon import control, matching, misses, redact
from proxy_addon.mitm.state import META, FlowState, State, body_of, flow_state, log
from proxy_addon.pacer import TOKEN_HEADER, Pacer
from proxy_addon.secret_rules import Secrets
from proxy_addon.store import Hit, LookupContext
from proxy_addon.wire import wire


def canonical_request(req: http.Request, state: State
                      ) -> tuple[matching.CanonicalRequest, Secrets]:
    """The request's key, and the secret rules knowing its own key (from its secret headers):
    a known secret found in its body is compared as the cassette stores it, replaced."""
    raw = state.secrets.raw_headers  # the few secret ones, without decoding all the others
    secret = [(k.decode("latin-1"), v.decode("utf-8", "surrogateescape"))
              for k, v in req.headers.fields if k.lower() in raw]
    secrets = state.secrets.with_values(redact.header_values(secret, state.secrets))
    path, _, query = req.path.partition("?")
    canon = matching.canonicalize_parts(req.method, req.scheme, req.pretty_host, req.port, path,
                                        query, req.headers.get("content-type"), body_of(req),
                                        state.ignore, secrets)
    return canon, secrets


def miss_response(message: str) -> http.Response:
    """A 404, which SDKs do not retry, with an OpenAI-style error body."""
    return http.Response.make(404, misses.error_body(message, "cassette_miss",
                                                     "cassette_not_found"),
                              {"content-type": "application/json", "x-cassette-miss": "1"})


class Replayer:
    """Answers requests from the store; marks the ones to record instead."""

    def __init__(self, state: State, pacer: Pacer) -> None:
        self.state = state
        self.pacer = pacer

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or flow.error is not None:
            return
        state, store = self.state, self.state.store
        assert store is not None
        test_id = flow.request.headers.pop(control.TEST_ID_HEADER, None) or state.current.test_id
        mode = state.mode
        if mode == "passthrough":
            return
        test_dir = state.current.test_dir
        canon, secrets = canonical_request(flow.request, state)
        st = FlowState(canonical=canon, action="pass", test_id=test_id, test_dir=test_dir,
                       secrets=secrets)
        flow.metadata[META] = st
        if mode == "record" or (mode == "auto" and store.recorder.is_recording(canon, test_dir)):
            st.action = "record"
            return
        hit = store.lookup(canon, LookupContext(connection=flow.client_conn.id, test_id=test_id,
                                                test_dir=test_dir))
        if hit is not None:
            st.action = "hit"
            state.counters.add("hits")
            if hit.other_host is not None:
                state.counters.note("other_host", {"asked": canon.host,
                                                   "recorded_for": hit.other_host,
                                                   "file": str(hit.entry.path)})
                log.info("cassette: %s answered from a recording made for %s: %s",
                         misses.clip(canon.describe()), hit.other_host, hit.entry.path)
            await self._answer(flow, st, hit)
            return
        if mode == "auto":
            st.action = "record"
            return
        st.action = "miss"
        message = misses.miss_message(canon, store.index)
        state.counters.add("misses")
        state.counters.note("miss_messages", message)
        state.current.misses.append(message)
        log.warning(message)
        flow.response = miss_response(message)

    async def _answer(self, flow: http.HTTPFlow, st: FlowState, hit: Hit) -> None:
        resp = hit.response
        pace = self.state.pace
        flow.is_replay = "response"  # as mitmproxy's own server replay marks its flows
        if resp.stream is not None and (pace > 0 or not resp.stream.complete):
            # Stream through the pacer: events spread over time, or a recorded cut replayed
            # as a real cut (the connection closes before the stream's end).
            port = await self.pacer.ensure_started()
            self.state.own_servers.add(("127.0.0.1", port))
            st.pacer_token = self.pacer.register(resp, pace)
            flow.request.scheme, flow.request.host, flow.request.port = "http", "127.0.0.1", port
            flow.request.headers[TOKEN_HEADER] = st.pacer_token
            return
        headers, body = wire(resp)
        flow.response = http.Response.make(resp.status, body, headers)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        st = flow_state(flow, "hit")
        if st is not None and st.pacer_token is not None and flow.response is not None:
            flow.response.stream = True

    def response(self, flow: http.HTTPFlow) -> None:
        self._forget(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._forget(flow)

    def _forget(self, flow: http.HTTPFlow) -> None:
        """A flow sent to the pacer ended: its token must not stay behind (it may never have
        reached the pacer)."""
        st = flow_state(flow, "hit")
        if st is not None and st.pacer_token is not None:
            self.pacer.forget(st.pacer_token)

    def done(self) -> None:
        if self.pacer.waiting:
            log.warning("cassette: %d paced replays were registered and never served",
                        self.pacer.waiting)
        self.pacer.close()
