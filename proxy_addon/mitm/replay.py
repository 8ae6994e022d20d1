"""The replay hooks: answer a request from the store, or decide it is recorded (or refreshed),
or a miss; judge the age of what answers it (``cassette_max_age``)."""

from __future__ import annotations

import functools
import time
import weakref
from collections.abc import Awaitable, Mapping
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType

from mitmproxy import http
from mitmproxy.net.http import status_codes, url

from proxy_addon.matching import canonical, hosts
from proxy_addon.mitm.flow import (
    META,
    FlowState,
    body_of,
    decoded_body,
    flow_state,
    header,
    joined,
    send_to_loopback,
)
from proxy_addon.mitm.guard import CLOSED_MODES
from proxy_addon.mitm.state import State, log
from proxy_addon.mitm.websocket import answer_websocket
from proxy_addon.model import RecordedResponse
from proxy_addon.redaction.secret_rules import Secrets
from proxy_addon.reports import record
from proxy_addon.runner import channel
from proxy_addon.serving import misses, normalised, tokens
from proxy_addon.serving.incidental import Incidental
from proxy_addon.serving.pacer import Pacer
from proxy_addon.serving.websocket_server import WebSocketServer
from proxy_addon.serving.wire import wire
from proxy_addon.store import Hit, LookupContext
from proxy_addon.store.age import AgeLimit, describe
from proxy_addon.summary import REQUEST_LOG_LIMIT


def canonical_request(
    req: http.Request, rules: canonical.Rules
) -> tuple[canonical.CanonicalRequest, Secrets]:
    """The request's key (``canonical.canonicalize_with_secrets``), and the secret rules knowing
    its own key, from its secret headers (only those are decoded) and query parameters. Its host
    and port are those of the URL a recording keeps (the Host header's, as ``pretty_url``), not
    the connection's, which may go elsewhere. The headers it reads are read in one pass."""
    secret_names = rules.secrets.raw_headers
    secret: list[tuple[str, str]] = []
    read: dict[bytes, list[bytes]] = {}
    for k, v in req.headers.fields:
        name = k.lower()
        if name in secret_names:
            secret.append((k.decode("latin-1"), v.decode("utf-8", "surrogateescape")))
        if name in _KEY_HEADERS:
            read.setdefault(name, []).append(v)
    path, _, query = req.path.partition("?")
    version = req.data.http_version
    authority = (req.authority if version in _AUTHORITY_VERSIONS else "") or joined(
        read.get(b"host")
    )
    if authority:  # the host and port its recorded URL names (``pretty_host``, ``pretty_url``)
        host, named_port = _authority(authority)
        port = named_port or url.default_port(req.scheme) or req.port
    else:
        host, port = req.host, req.port
    return canonical.canonicalize_with_secrets(
        canonical.Request(
            req.method,
            req.scheme,
            host,
            port,
            path,
            query,
            joined(read.get(b"content-type")),
            decoded_body(req.raw_content or b"", joined(read.get(b"content-encoding"))),
            secret,
        ),
        rules,
    )


# the headers the key reads, besides the secret ones (lower case, as ``header`` takes them)
_KEY_HEADERS = frozenset((b"host", b"content-type", b"content-encoding"))
# where the authority is the request's own (``:authority``), as ``Request.host_header`` reads it
_AUTHORITY_VERSIONS = (b"HTTP/2.0", b"HTTP/3")
_TEST_ID_HEADER = channel.TEST_ID_HEADER.encode()


@functools.lru_cache(maxsize=1024)
def _authority(authority: str) -> tuple[str, int | None]:
    """A Host header's host and port, as mitmproxy's ``pretty_host`` reads them; remembered,
    as a run sends the same few hosts again and again (the parse, an IDNA round trip and a host
    check, was a tenth of a replayed request's own time)."""
    return url.parse_authority(authority, check=False)


@functools.cache
def _reason(status: int) -> bytes:
    return status_codes.RESPONSES.get(status, "").encode()


# what a hit on each recorded response sends, by the response's id (see replayed_response)
_templates: dict[int, http.Response] = {}
# the tokens each recorded response's usage says (the report's fields), and what a hit on it
# adds to the summary's counts, by its id, kept as long as the templates
_served: dict[int, tuple[dict[str, int], dict[str, int]]] = {}
_NO_COUNTS: Mapping[str, int] = MappingProxyType({})


def replayed_response(resp: RecordedResponse) -> http.Response:
    """The response a hit sends whole. The first hit builds it (``wire``: headers and body bytes,
    a stream framed once); later hits copy it. mitmproxy checks the type of every field of a
    ``Response`` it is given (under ``__debug__``: 16 µs, the largest single cost of a replayed
    request), so the copy is made as mitmproxy's own ``from_state`` makes one, without running
    the checks the template passed. It shares the body bytes and the header fields, both
    immutable (an addon that changes a header replaces the copy's tuple of fields, never the
    tuple), and copies no more than the objects that hold them: ``copy.copy`` and
    ``Headers.copy`` (which checks each field again) cost 12 µs of a hit's 45. The templates are
    kept here, by the recorded response they were built from, for as long as it lives (the
    store's cache decides that)."""
    template = _templates.get(id(resp))
    if template is None:
        headers, body = wire(resp)
        template = http.Response(
            b"HTTP/1.1",
            resp.status,
            _reason(resp.status),
            http.Headers(headers),
            body,
            None,
            0.0,
            0.0,
        )
        _templates[id(resp)] = template
        weakref.finalize(resp, _templates.pop, id(resp), None)
    data = object.__new__(http.ResponseData)
    data.__dict__.update(template.data.__dict__)
    copied = data.headers = object.__new__(http.Headers)
    copied.fields = template.data.headers.fields
    data.timestamp_start = data.timestamp_end = time.time()
    response = http.Response.__new__(http.Response)
    response.data = data
    return response


def miss_response(message: str, canon: canonical.CanonicalRequest) -> http.Response:
    """``misses.MISS_STATUS`` with the error body the request's provider's SDKs parse, and
    ``x-should-retry: false``, which the Stainless SDKs (openai, anthropic, groq, and the
    frameworks over them) honour before their own retry rules."""
    return http.Response.make(
        misses.MISS_STATUS,
        misses.error_body(
            message, "cassette_miss", "cassette_not_found", misses.MISS_STATUS, _provider(canon)
        ),
        {"content-type": "application/json", "x-cassette-miss": "1", "x-should-retry": "false"},
    )


def stale_response(message: str, canon: canonical.CanonicalRequest) -> http.Response:
    """A 410 Gone (the recording expired), which SDKs do not retry either."""
    return http.Response.make(
        410,
        misses.error_body(message, "cassette_stale", "cassette_stale", 410, _provider(canon)),
        {"content-type": "application/json", "x-cassette-stale": "1", "x-should-retry": "false"},
    )


def _provider(canon: canonical.CanonicalRequest) -> str:
    return hosts.family(canon.host, canon.path)


def incidental_response(
    answer: Incidental, req: http.Request, canon: canonical.CanonicalRequest
) -> http.Response:
    """The quiet answer a replay gives a request not under test (``cassette_incidental``), or
    the one made for it (a token request's placeholder, ``serving/tokens.py``)."""
    headers = {"x-cassette-incidental": "1"}
    if answer.made is not None:
        asked = tokens.TokenRequest(
            canon.host, canon.path, req.path.partition("?")[2], body_of(req)
        )
        made = answer.made(asked)
        return http.Response.make(made.status, made.body, {**made.headers, **headers})
    if answer.content_type:
        headers["content-type"] = answer.content_type
    return http.Response.make(answer.status, answer.body, headers)


class ReplayHooks:
    """Answers requests from the store; marks the ones to record instead."""

    def __init__(self, state: State, pacer: Pacer, sockets: WebSocketServer) -> None:
        self.state = state
        self.pacer = pacer
        self.sockets = sockets
        self._ages: AgeLimit | None = None
        self._told: set[Path] = set()  # files already warned about (stale, not refreshed)
        self._told_incidental: set[str] = set()  # incidental patterns already logged
        # files re-recorded in this run (refresh), and the test (directory) re-recording each
        self._refreshed: dict[Path, str | None] = {}

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or flow.error is not None:
            return
        state, store = self.state, self.state.store
        assert store is not None
        state.counters.add("requests")
        named = header(flow.request, _TEST_ID_HEADER)
        if named is not None:
            del flow.request.headers[channel.TEST_ID_HEADER]
        mode = state.settings.mode
        if mode == "passthrough":
            return
        canon, secrets = canonical_request(flow.request, state.settings.rules)
        test_id, test_dir = state.current.names(secrets, named)
        st = FlowState(
            canonical=canon, action="pass", test_id=test_id, test_dir=test_dir, secrets=secrets
        )
        flow.metadata[META] = st
        incidental = state.settings.incidental.match(canon.method, canon.host, canon.path)
        if incidental is not None:
            self._incidental(flow, st, incidental)
            return
        if mode == "record" or (
            mode in ("auto", "refresh") and store.recorder.is_recording(canon, test_dir)
        ):
            st.action = "record"  # recorded in this run: its sequence goes on being recorded
            self._report(st, "recorded")
            return
        hit = store.lookup(
            canon, LookupContext(connection=flow.client_conn.id, test_id=test_id, test_dir=test_dir)
        )
        if hit is not None:
            if mode == "refresh" and self._refreshes(flow, st, hit):
                self._report(st, "recorded", file=hit.entry.file)
                return
            if mode != "refresh" and self._refused_as_stale(flow, st, hit):
                return
            st.action = "hit"
            self._report_hit(st, hit)
            if hit.normalised:
                item = normalised.note(canon, hit.entry, hit.passed_over, store.index)
                state.counters.add("normalised")
                state.counters.note("normalised_hits", item)
                log.info(normalised.log_line(item))
            if hit.other_host is not None:
                state.counters.note(
                    "other_host",
                    {
                        "asked": canon.host,
                        "recorded_for": hit.other_host,
                        "file": hit.entry.file,
                    },
                )
                log.info(
                    "cassette: %s answered from a recording made for %s: %s",
                    misses.clip(canon.describe()),
                    hit.other_host,
                    hit.entry.path,
                )
            pointed = self._answer(flow, st, hit)
            if pointed is not None:
                await pointed
            return
        if mode == "auto":
            st.action = "record"
            self._report(st, "recorded")
            return
        self._miss(flow, st)

    def _report(
        self,
        st: FlowState,
        outcome: str,
        counts: Mapping[str, int] = _NO_COUNTS,
        **details: object,
    ) -> None:
        """The request's record in the run's report (its ``ms`` is added when it ends), and the
        ``counts`` its outcome adds to the summary's."""
        st.report = record.request_record(st.canonical, outcome, st.test_id, details)
        self.state.counters.tally(counts, "request_log", st.report, REQUEST_LOG_LIMIT)

    def _report_hit(self, st: FlowState, hit: Hit) -> None:
        """A hit's record, with the tokens its recorded usage says were served (worked out
        once per recorded response, as ``replayed_response`` builds it once), counted."""
        served = _served.get(id(hit.response))
        if served is None:
            usage = record.hit_usage(hit.response)
            counts = {"hits": 1}
            if usage:
                counts["input_tokens_served"] = usage["input_tokens"]
                counts["output_tokens_served"] = usage["output_tokens"]
            served = _served[id(hit.response)] = (usage, counts)
            weakref.finalize(hit.response, _served.pop, id(hit.response), None)
        usage, counts = served
        notes = []
        if hit.other_host:
            notes.append("other host")
        if hit.normalised:
            notes.append("normalised")
        self._report(st, "hit", counts, file=hit.entry.file, notes=notes, **usage)

    def _incidental(self, flow: http.HTTPFlow, st: FlowState, answer: Incidental) -> None:
        """A request not under test: counted; answered here where nothing may be forwarded
        (replay, refresh; a token request in replay only: a re-recording needs a real token,
        so refresh forwards it and admits its upstream), forwarded otherwise; never recorded.
        Said once per pattern."""
        st.action = "incidental"
        self._report(st, "incidental", {"incidental": 1})
        mode = self.state.settings.mode
        closed = mode in CLOSED_MODES and not (mode == "refresh" and answer.credentials)
        if answer.pattern not in self._told_incidental:
            self._told_incidental.add(answer.pattern)
            log.info(
                "cassette: %s is not under test (%s): %s, never recorded",
                misses.clip(st.canonical.describe()),
                answer.what,
                f"answered {answer.status}" if closed else "forwarded",
            )
        if closed:
            flow.response = incidental_response(answer, flow.request, st.canonical)
        elif mode == "refresh":
            self.state.refresh_upstreams.add((flow.request.host, flow.request.port))

    def _miss(self, flow: http.HTTPFlow, st: FlowState) -> None:
        """No recording answers it (replay, refresh): an error naming the nearest recording."""
        state, store = self.state, self.state.store
        assert store is not None
        st.action = "miss"
        near = misses.nearest(st.canonical, store.index)
        message = misses.miss_message(
            st.canonical,
            store.index,
            near,
            lambda rules: canonical_request(flow.request, rules)[0],
            state.settings.interface,
        )
        state.miss(message)
        flow.response = miss_response(message, st.canonical)
        detail = record.miss_detail(st.canonical, store.index, near)
        self._report(st, "miss", message=message, **detail)

    def _age_over_limit(self, hit: Hit) -> timedelta | None:
        limit = self.state.settings.max_age
        if limit is None:
            return None
        if self._ages is None or self._ages.limit != limit:
            self._ages = AgeLimit(limit)
        return self._ages.age_over(hit.entry, lambda: hit.entry.recording)

    def _refused_as_stale(self, flow: http.HTTPFlow, st: FlowState, hit: Hit) -> bool:
        """A hit on a recording older than ``cassette_max_age``: counted and warned about once
        per file; answered (``warn``), or refused with a 410 like a miss (``fail``)."""
        how_old = self._age_over_limit(hit)
        if how_old is None:
            return False
        state = self.state
        refused = state.settings.stale_policy == "fail"
        message = misses.stale_message(
            hit.entry.path, how_old, state.settings.max_age_text, refused, state.settings.interface
        )
        if hit.entry.path not in self._told:
            self._told.add(hit.entry.path)
            log.warning(message)
        if not refused:
            state.counters.add("stale")
            return False
        st.action = "stale"
        state.miss(message, counter="stale_refused", logged=True)  # told once per file, above
        flow.response = stale_response(message, st.canonical)
        reason = (
            f"recorded {describe(how_old)} ago, over cassette_max_age={state.settings.max_age_text}"
        )
        self._report(st, "stale", file=hit.entry.file, message=message, reason=reason)
        return True

    def _refreshes(self, flow: http.HTTPFlow, st: FlowState, hit: Hit) -> bool:
        """Refresh mode: whether this hit is forwarded to re-record its recording, in its own
        file. Not when another test refreshed the recording earlier in this run, when it is
        fresh (younger than ``cassette_max_age``, when set) or a llama-stack file (another
        tool's format): those are replayed. The same test asking again (before its first
        re-recording took its place) goes on re-recording it."""
        entry = hit.entry
        if entry.path in self._refreshed:
            if self._refreshed[entry.path] != st.test_dir:
                return False
            st.action, st.refresh = "record", entry
            return True
        if entry.from_llama_stack:
            if entry.path not in self._told:
                self._told.add(entry.path)
                log.warning(
                    "cassette: not refreshing %s: a llama-stack file is replayed as it "
                    "is (cassette import-llama-stack turns it into a cassette that can "
                    "be refreshed)",
                    entry.path,
                )
            return False
        how_old = self._age_over_limit(hit)
        if self.state.settings.max_age is not None and how_old is None:
            return False
        self._refreshed[entry.path] = st.test_dir
        st.action, st.refresh = "record", entry
        self.state.refresh_upstreams.add((flow.request.host, flow.request.port))
        log.info(
            "cassette: refreshing %s%s",
            entry.path,
            f" (recorded {describe(how_old)} ago)" if how_old is not None else "",
        )
        return True

    def _answer(self, flow: http.HTTPFlow, st: FlowState, hit: Hit) -> Awaitable[None] | None:
        """Answer a hit: its response is set here (the common case, nothing to await), or the
        flow is pointed at one of the loopback servers, which the caller awaits."""
        resp = hit.response
        pace = self.state.settings.pace
        flow.is_replay = "response"  # as mitmproxy's own server replay marks its flows
        if resp.websocket is not None:
            return answer_websocket(flow, st, hit, self.sockets, self.state)
        if resp.stream is not None and (pace > 0 or not resp.stream.complete):
            # Stream through the pacer: events spread over time, or a recorded cut replayed
            # as a real cut (the connection closes before the stream's end).
            return send_to_loopback(flow, st, self.pacer, (resp, pace), self.state)
        flow.response = replayed_response(resp)
        return None

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        st = flow_state(flow, "hit")
        if (
            st is not None
            and st.loopback is not None
            and st.loopback[0] is self.pacer
            and flow.response is not None
        ):
            flow.response.stream = True

    def response(self, flow: http.HTTPFlow) -> None:
        st = flow_state(flow)
        if st is None:
            return
        self._forget(st)
        if st.report is not None and flow.response is not None:
            end = flow.response.timestamp_end or flow.response.timestamp_start
            if end is not None:
                st.report["ms"] = round((end - flow.request.timestamp_start) * 1000, 1)

    def error(self, flow: http.HTTPFlow) -> None:
        st = flow_state(flow)
        if st is not None:
            self._forget(st)

    @staticmethod
    def _forget(st: FlowState) -> None:
        """A flow sent to the pacer or the WebSocket server ended (for a WebSocket: its
        handshake did): its token must not stay behind (it may never have reached them)."""
        if st.action == "hit" and st.loopback is not None:
            server, token = st.loopback
            server.forget(token)

    def done(self) -> None:
        if self.pacer.waiting:
            log.warning(
                "cassette: %d paced replays were registered and never served", self.pacer.waiting
            )
        self.pacer.close()
        if self.sockets.waiting:
            log.warning(
                "cassette: %d WebSocket replays were registered and never served",
                self.sockets.waiting,
            )
        self.sockets.close()
