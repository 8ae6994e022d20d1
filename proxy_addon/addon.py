"""mitmproxy glue: options, hooks, the live stream tap, the pacer and the miss response.

Load with ``mitmdump -s proxy_addon/addon.py --set cassette_mode=replay``. Every decision is
made by the plain modules beside this one (matching, store, cassette, sse, redact); the hooks
only translate between mitmproxy's flow objects and those functions.
"""

# No `from __future__ import annotations` here: mitmdump loads this file as a script outside
# sys.modules, where dataclasses cannot resolve string annotations.
import asyncio
import gc
import logging
import math
import secrets
import time
import zlib
from collections.abc import Callable, Sequence  # mitmproxy's --set parses only this Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from mitmproxy import ctx, exceptions, http
from mitmproxy.net import encoding as mitm_encoding

from proxy_addon import matching, redact
from proxy_addon.cassette import Body, RecordedRequest, RecordedResponse, Stream
from proxy_addon.conversation import LookupContext
from proxy_addon.sse import StreamCapture, StreamFormat, frame, frame_event, stream_format
from proxy_addon.store import BackgroundWriter, CassetteStore, Hit, atomic_write, scope_name

log = logging.getLogger("proxy_addon")

MODES = ("replay", "record", "auto", "passthrough")
META = "cassette"  # key of our state in flow.metadata
PACER_TOKEN_HEADER = "x-cassette-pacer"
# A client may name the test it runs; the header is removed before matching and forwarding.
TEST_ID_HEADER = "x-cassette-test-id"


class BodyTap:
    """A ``flow.response.stream`` callable for a plain body that arrives progressively (Gemini's
    JSON-array stream, an error answering a streaming request): the client gets each chunk at
    once, and the body is kept whole to be stored when it ends."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def __call__(self, chunk: bytes) -> bytes:
        if chunk:
            self.chunks.append(chunk)
        return chunk


@dataclass(slots=True)
class FlowState:
    """What the addon decided about one flow, kept in ``flow.metadata[META]``."""

    canonical: matching.CanonicalRequest
    action: str  # "hit", "miss", "record", "pass"
    test_id: str | None = None
    scope: str | None = None
    key: str | None = None
    slot: int | None = None
    request: RecordedRequest | None = None
    capture: StreamCapture | None = None
    body_tap: BodyTap | None = None
    headers_at: float = 0.0
    paced: bool = False


@dataclass(slots=True)
class Stats:
    hits: int = 0
    recorded: int = 0
    misses: int = 0
    not_saved: int = 0
    miss_messages: list[str] = field(default_factory=list)
    # hits answered from a recording made for another host: (asked host, recorded for, file)
    other_host: list[tuple[str, str, str]] = field(default_factory=list)

    def line(self, unused: int, total: int) -> str:
        return (f"cassette summary: {self.hits} hits, {self.recorded} recorded, "
                f"{self.misses} misses, {unused} unused recordings (of {total})"
                + (f", {self.not_saved} not saved (incomplete)" if self.not_saved else "")
                + (f", {len(self.other_host)} answered from another host's recording"
                   if self.other_host else ""))


def _parse_pace(value: str) -> float:
    try:
        pace = float(value)
    except ValueError:
        raise exceptions.OptionsError(
            f"cassette_pace must be a number such as 0, 0.5 or 1, not {value!r}") from None
    if not math.isfinite(pace) or pace < 0:
        raise exceptions.OptionsError(f"cassette_pace must be a finite number >= 0, not {value!r}")
    return pace


def split_list(values: Sequence[str]) -> list[str]:
    """A list option's items: ``--set x=a --set x=b`` and ``--set x=a,b`` both work."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


@dataclass(slots=True)
class Scope:
    """The test being run, as told over the control channel: its id, its own cassette, and
    the misses it caused so far."""

    test_id: str | None = None
    cassette: str | None = None
    misses: list[str] = field(default_factory=list)


class Cassettes:
    """Options, the store and the counters shared by the replay and record hooks."""

    def __init__(self) -> None:
        self.store: CassetteStore | None = None
        self.stats = Stats()
        self.scope = Scope()
        self.writer: BackgroundWriter | None = None
        self.pace = 0.0
        self.ignore: tuple[tuple[str | int, ...], ...] = ()

    def load(self, loader: Any) -> None:
        loader.add_option("cassette_dir", str, "cassettes",
                          "Directory of cassettes: read at start-up, written when recording.")
        loader.add_option("cassette_mode", str, "replay",
                          "replay: answer from cassettes, never touch the network; record: "
                          "forward everything and (re)write cassettes; auto: replay hits and "
                          "record misses; passthrough: forward, record nothing.",
                          choices=MODES)
        loader.add_option("cassette_pace", str, "0",
                          "Replay speed of streams, a number: 0 = as fast as possible, "
                          "1 = with the recorded gaps between events, 0.5 = twice as fast.")
        loader.add_option("cassette_ignore", Sequence[str], [],
                          "Dotted JSON paths left out of request matching, e.g. user, "
                          "metadata.trace_id, messages[0].name, messages.*.name.")
        loader.add_option("cassette_redact_headers", Sequence[str], [],
                          "More request/response header names whose values never reach disk.")
        loader.add_option("cassette_max_file_mb", int, 512,
                          "Skip (with a warning) cassette files larger than this many MB.")
        loader.add_option("cassette_summary", str, "",
                          "Write the run's summary (hits, recorded, misses, unused recordings, "
                          "miss messages) as JSON to this file when the proxy stops.")

    def configure(self, updated: set[str]) -> None:
        if "cassette_mode" in updated and ctx.options.cassette_mode not in MODES:
            # mitmproxy does not enforce `choices` for values given with --set
            raise exceptions.OptionsError(
                f"cassette_mode must be one of {', '.join(MODES)}, not "
                f"{ctx.options.cassette_mode!r}")
        if "cassette_pace" in updated:
            self.pace = _parse_pace(ctx.options.cassette_pace)
        if "cassette_ignore" in updated:
            try:
                self.ignore = tuple(matching.parse_path(p)
                                    for p in split_list(ctx.options.cassette_ignore))
            except ValueError as e:
                raise exceptions.OptionsError(f"cassette_ignore: {e}") from None
        if "cassette_mode" in updated and ctx.options.cassette_mode in ("replay", "auto"):
            # Answer from cassettes before any upstream connection exists: offline, a CONNECT
            # to api.openai.com must not make mitmproxy resolve and dial it first.
            if ctx.options.connection_strategy != "lazy":
                ctx.options.update(connection_strategy="lazy")
        if "cassette_max_file_mb" in updated and ctx.options.cassette_max_file_mb <= 0:
            raise exceptions.OptionsError("cassette_max_file_mb must be a positive number of MB")
        if updated & {"cassette_dir", "cassette_ignore", "cassette_mode", "cassette_max_file_mb"}:
            root = Path(ctx.options.cassette_dir)
            if ctx.options.cassette_mode == "replay" and not root.is_dir():
                raise exceptions.OptionsError(
                    f"cassette_dir {str(root)!r} is not a directory: nothing to replay "
                    "(record first with --set cassette_mode=record or auto)")
            if root.exists() and not root.is_dir():
                raise exceptions.OptionsError(f"cassette_dir {str(root)!r} is not a directory")
            if self.writer is None:
                self.writer = BackgroundWriter(self._written)
            store = CassetteStore(root, self.ignore,
                                  max_file_bytes=ctx.options.cassette_max_file_mb * 1024 * 1024,
                                  writer=self.writer)
            # Loading makes many long-lived objects: without the collector running over and over
            # meanwhile, and with them frozen out of its later passes, start-up and per-request
            # latency stay flat with the directory's size (see scripts/bench).
            gc.unfreeze()  # a store loaded before (options changed at run time) can be freed
            gc.disable()
            try:
                store.load()
            finally:
                gc.enable()
            gc.freeze()
            self.store = store
            log.info("cassette: %d recordings in %s (%s mode)%s", len(store), root,
                     ctx.options.cassette_mode,
                     f", {len(store.bad)} unreadable files skipped" if store.bad else "")

    @property
    def mode(self) -> str:
        return ctx.options.cassette_mode

    @property
    def extra_secret_headers(self) -> list[str]:
        return split_list(ctx.options.cassette_redact_headers)

    def _written(self, path: Path, error: OSError | None) -> None:
        """Called by the writer thread after each cassette write."""
        if error is None:
            self.stats.recorded += 1
            log.info("cassette: recorded %s", path)
        else:
            self.stats.not_saved += 1
            log.error("cassette: could not write the cassette %s: %s", path,
                      error.strerror or error)

    def done(self) -> None:
        if self.writer is not None:
            self.writer.close()  # every finished recording reaches the disk before we exit
        if self.store is None:
            return
        unused = self.store.unused()
        log.warning(self.stats.line(len(unused), len(self.store)))
        if ctx.options.cassette_summary:
            summary = {
                "hits": self.stats.hits, "recorded": self.stats.recorded,
                "misses": self.stats.misses, "not_saved": self.stats.not_saved,
                "recordings": len(self.store), "unused": sorted(str(e.path) for e in unused),
                "miss_messages": self.stats.miss_messages,
                "other_host": [{"asked": a, "recorded_for": r, "file": f}
                               for a, r, f in self.stats.other_host],
                "bad_files": [{"path": str(b.path), "reason": b.reason} for b in self.store.bad],
            }
            try:
                atomic_write(Path(ctx.options.cassette_summary),
                             orjson.dumps(summary, option=orjson.OPT_INDENT_2))
            except OSError as e:
                log.error("cassette: could not write the summary to %s: %s",
                          ctx.options.cassette_summary, e.strerror)


# ---------------------------------------------------------------------------------------------
# Replay


def _wire_headers(resp: RecordedResponse) -> list[tuple[bytes, bytes]]:
    return [(k.encode(), v.encode()) for k, v in resp.headers
            if k.lower() not in redact.TRANSPORT_RESPONSE_HEADERS]


def replay_body(resp: RecordedResponse) -> bytes:
    if resp.stream is not None:
        return frame(resp.stream.format, resp.stream.events)
    return resp.body.to_bytes() if resp.body is not None else b""


def wire_response(resp: RecordedResponse) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers and body bytes of a replayed response, framed once and reused: a request
    replayed many times costs a dictionary lookup, not a JSON encoding per event."""
    if resp.wire is None:
        resp.wire = (_wire_headers(resp), replay_body(resp))
    return resp.wire


def miss_message(canon: matching.CanonicalRequest, store: CassetteStore) -> str:
    """What a user needs to fix a miss: what was asked, what was nearest and where it differs."""
    asked = canon.describe()
    model = canon.body.get("model") if isinstance(canon.body, dict) else None
    msg = (f"cassette miss: no recording in {store.root}/ matches {asked}"
           + (f" (model {model})" if isinstance(model, str) else "") + ".")
    if canon.body is not None:
        body = orjson.dumps(canon.body).decode()
        msg += f" Request body: {body[:300]}" + ("..." if len(body) > 300 else "") + "."
    near = store.nearest(canon)
    if near is not None:
        entry, diffs = near
        where = ", ".join(diffs[:8]) + (" ..." if len(diffs) > 8 else "") if diffs else "nothing"
        msg += f" Nearest recording: {entry.path}, which differs at: {where}."
    else:
        msg += " No recording exists for this endpoint."
    bad = store.bad_files_for(canon)
    if bad:
        msg += " Unreadable files that may have matched: " + "; ".join(
            f"{b.path} ({b.reason})" for b in bad[:3]) + "."
    msg += " Record it with --set cassette_mode=auto (or record)."
    return msg


def miss_response(message: str) -> http.Response:
    """A 404, which SDKs do not retry, with an OpenAI-style error body."""
    body = orjson.dumps({"error": {"message": message, "type": "cassette_miss",
                                   "param": None, "code": "cassette_not_found"}})
    return http.Response.make(404, body, {"content-type": "application/json",
                                          "x-cassette-miss": "1"})


class Pacer:
    """A loopback HTTP server inside the addon that writes a recorded stream's events at their
    recorded offsets. A response built in the ``request`` hook goes out in one piece, so a
    paced replay points the flow at this server instead and lets mitmproxy stream from it."""

    def __init__(self) -> None:
        self._server: asyncio.AbstractServer | None = None
        self._lock = asyncio.Lock()
        self._pending: dict[str, tuple[RecordedResponse, float]] = {}
        self.port = 0

    async def ensure_started(self) -> int:
        async with self._lock:
            if self._server is None:
                self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
                self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def register(self, resp: RecordedResponse, pace: float) -> str:
        token = secrets.token_hex(16)
        self._pending[token] = (resp, pace)
        return token

    def done(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length") or 0)
                if length:
                    await reader.readexactly(length)
                item = self._pending.pop(headers.get(PACER_TOKEN_HEADER, ""), None)
                if item is None:
                    writer.write(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n"
                                 b"connection: close\r\n\r\n")
                    await writer.drain()
                    return
                if not await self._write(writer, *item):
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _write(self, writer: asyncio.StreamWriter, resp: RecordedResponse,
                     pace: float) -> bool:
        """Write one response; False when the connection must close (a recorded cut)."""
        head = [f"HTTP/1.1 {resp.status} \r\n".encode()]
        head += [k + b": " + v + b"\r\n" for k, v in _wire_headers(resp)]
        head.append(b"transfer-encoding: chunked\r\n\r\n")
        writer.write(b"".join(head))
        await writer.drain()
        start = time.monotonic()
        if resp.stream is not None:
            fmt = resp.stream.format
            for ev in resp.stream.events:
                delay = start + ev.t * pace - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                chunk = frame_event(fmt, ev)
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await writer.drain()
            if not resp.stream.complete:
                return False
        else:
            body = wire_response(resp)[1]
            if body:
                writer.write(b"%x\r\n%s\r\n" % (len(body), body))
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True


CONTROL_HOST = "cassette.control"


class ControlChannel:
    """Requests to the reserved host ``cassette.control`` are answered by the proxy itself,
    never forwarded. The pytest plugin uses them to say which test runs and to ask which
    misses it caused:

    - ``POST /scope`` with ``{"test_id": ..., "cassette": ...}`` (or ``{}`` after the test)
    - ``GET /misses``: the miss messages since the scope was set
    """

    def __init__(self, cassettes: Cassettes) -> None:
        self.cassettes = cassettes

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.request.host != CONTROL_HOST:
            return
        scope = self.cassettes.scope
        path = flow.request.path.split("?", 1)[0]
        if path == "/scope" and flow.request.method == "POST":
            try:
                body = orjson.loads(flow.request.get_content(strict=False) or b"{}")
            except orjson.JSONDecodeError:
                body = None
            if not isinstance(body, dict):
                flow.response = _json_response(400, {"error": "expected a JSON object"})
                return
            test_id = body.get("test_id")
            cassette_name = body.get("cassette")
            scope.test_id = test_id if isinstance(test_id, str) else None
            scope.cassette = scope_name(cassette_name) if isinstance(cassette_name, str) and \
                cassette_name else None
            scope.misses = []
            flow.response = _json_response(200, {"test_id": scope.test_id,
                                                 "cassette": scope.cassette})
        elif path == "/misses":
            flow.response = _json_response(200, {"misses": scope.misses})
        else:
            flow.response = _json_response(404, {"error": f"no control endpoint {path}"})


def _json_response(status: int, body: Any) -> http.Response:
    return http.Response.make(status, orjson.dumps(body), {"content-type": "application/json"})


class Replayer:
    """Answers requests from the store; decides which flows are recorded instead."""

    def __init__(self, cassettes: Cassettes, pacer: Pacer) -> None:
        self.cassettes = cassettes
        self.pacer = pacer

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or flow.error is not None:
            return
        c = self.cassettes
        store = c.store
        assert store is not None
        req = flow.request
        test_id = req.headers.pop(TEST_ID_HEADER, None) or c.scope.test_id
        mode = c.mode
        if mode == "passthrough":
            return
        scope = c.scope.cassette
        path, _, query = req.path.partition("?")
        canon = matching.canonicalize_parts(
            req.method, req.scheme, req.pretty_host, req.port, path, query,
            req.headers.get("content-type"), req.raw_content and req.get_content(strict=False),
            c.ignore)
        state = FlowState(canonical=canon, action="pass", test_id=test_id, scope=scope)
        flow.metadata[META] = state
        if mode == "record" or (mode == "auto" and store.is_recording(canon, scope)):
            state.action = "record"
            return
        hit = store.lookup(canon, LookupContext(connection=flow.client_conn.id, test_id=test_id,
                                                scope=scope))
        if hit is not None:
            state.action = "hit"
            c.stats.hits += 1
            if hit.other_host is not None:
                c.stats.other_host.append((canon.host, hit.other_host, str(hit.entry.path)))
                log.info("cassette: %s answered from a recording made for %s: %s",
                         canon.describe(), hit.other_host, hit.entry.path)
            await self._answer(flow, state, hit)
            return
        if mode == "auto":
            state.action = "record"
            return
        state.action = "miss"
        c.stats.misses += 1
        message = miss_message(canon, store)
        c.stats.miss_messages.append(message)
        c.scope.misses.append(message)
        log.warning(message)
        flow.response = miss_response(message)

    async def _answer(self, flow: http.HTTPFlow, state: FlowState, hit: Hit) -> None:
        resp = hit.response
        pace = self.cassettes.pace
        if resp.stream is not None and (pace > 0 or not resp.stream.complete):
            # Stream through the pacer: events spread over time, or a recorded cut replayed
            # as a real cut (the connection closes before the stream's end).
            port = await self.pacer.ensure_started()
            token = self.pacer.register(resp, pace)
            flow.request.scheme = "http"
            flow.request.host = "127.0.0.1"
            flow.request.port = port
            flow.request.headers[PACER_TOKEN_HEADER] = token
            state.paced = True
            return
        headers, body = wire_response(resp)
        flow.response = http.Response.make(resp.status, body, headers)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state = flow.metadata.get(META)
        if isinstance(state, FlowState) and state.paced and flow.response is not None:
            flow.response.stream = True


# ---------------------------------------------------------------------------------------------
# Record


def _stream_decoder(content_encoding: str) -> Callable[[bytes], bytes] | None:
    """An incremental decoder for a compressed stream, or None when it is not compressed."""
    enc = content_encoding.strip().lower()
    if enc in ("", "identity"):
        return None
    if enc in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress
    if enc == "deflate":
        return zlib.decompressobj().decompress
    if enc == "br":
        import brotli

        return brotli.Decompressor().process
    if enc == "zstd":
        try:
            from compression import zstd  # type: ignore[import-not-found]
        except ImportError:
            from backports import zstd  # type: ignore[import-not-found,no-redef]
        return zstd.ZstdDecompressor().decompress
    raise ValueError(f"unsupported content-encoding {content_encoding!r}")


def asks_for_stream(canon: matching.CanonicalRequest) -> bool:
    """Whether a request asked for a streamed answer, whatever content type comes back (read
    from its canonical form: the body is not parsed again)."""
    if ":streamGenerateContent" in canon.path:
        return True
    return isinstance(canon.body, dict) and canon.body.get("stream") is True


class StreamTap:
    """The ``flow.response.stream`` callable: passes each chunk on untouched and feeds a copy,
    decoded, to the capture with its arrival time."""

    def __init__(self, fmt: StreamFormat, content_encoding: str, started: float) -> None:
        self.capture = StreamCapture(fmt)
        self._decode = _stream_decoder(content_encoding)
        self._started = started

    def __call__(self, chunk: bytes) -> bytes:
        t = time.monotonic() - self._started
        if chunk:
            self.capture.feed(self._decode(chunk) if self._decode else chunk, t)
        else:
            self.capture.finish(t)
        return chunk


def recorded_request(req: http.Request, extra_secret: Sequence[str]) -> RecordedRequest:
    """The request as it is written: secrets replaced by a marker, the live request untouched."""
    content_type = req.headers.get("content-type")
    body = Body.from_bytes(req.get_content(strict=False) or b"", content_type)
    if body is not None and body.kind == "json":
        body = Body("json", redact.redact_body(body.value))
    elif body is not None and body.kind == "text" and content_type and \
            "x-www-form-urlencoded" in content_type:
        body = Body("text", redact.redact_form(body.value))
    elif body is not None and body.kind == "multipart":
        body = Body("multipart", redact.redact_multipart(body.value))
    return RecordedRequest(
        method=req.method,
        url=redact.redact_url(req.pretty_url),
        headers=redact.request_headers_for_cassette(req.headers.items(multi=True), extra_secret),
        body=body,
    )


def client_hung_up(error_message: str) -> bool:
    """mitmproxy's error text says which side closed: "Client disconnected." for the client."""
    return "client" in error_message.lower()


class Recorder:
    """Forwards flows marked for recording, taps their streams, and saves whole exchanges."""

    def __init__(self, cassettes: Cassettes) -> None:
        self.cassettes = cassettes

    def request(self, flow: http.HTTPFlow) -> None:
        state = flow.metadata.get(META)
        if not isinstance(state, FlowState) or state.action != "record":
            return
        c = self.cassettes
        assert c.store is not None
        state.request = recorded_request(flow.request, c.extra_secret_headers)
        state.key, state.slot = c.store.begin_recording(state.canonical, state.request,
                                                        state.test_id, state.scope)
        flow.request.anticomp()  # ask for plain bytes, so cassettes hold readable text

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state = flow.metadata.get(META)
        if not isinstance(state, FlowState) or state.action != "record" or flow.response is None:
            return
        state.headers_at = time.monotonic()
        fmt = stream_format(flow.response.headers.get("content-type"))
        if fmt is None:
            if asks_for_stream(state.canonical):
                state.body_tap = BodyTap()
                flow.response.stream = state.body_tap
            return
        try:
            tap = StreamTap(fmt, flow.response.headers.get("content-encoding", ""),
                            state.headers_at)
        except ValueError as e:
            log.warning("cassette: not recording %s: %s", flow.request.pretty_url, e)
            flow.response.stream = True
            state.action = "pass"
            self._abandon(state)
            return
        state.capture = tap.capture
        flow.response.stream = tap

    def response(self, flow: http.HTTPFlow) -> None:
        state = flow.metadata.get(META)
        if not isinstance(state, FlowState) or state.action != "record" or flow.response is None:
            return
        if state.capture is not None:
            if not state.capture.upstream_finished:  # the tap never saw the end
                state.capture.finish(time.monotonic() - state.headers_at)
            self._save(flow, state, state.capture)
        else:
            self._save(flow, state, None)

    def error(self, flow: http.HTTPFlow) -> None:
        state = flow.metadata.get(META)
        if not isinstance(state, FlowState) or state.action != "record":
            return
        capture = state.capture
        reason = flow.error.msg if flow.error else "error"
        if capture is not None and flow.response is not None:
            if capture.complete:
                # SDKs hang up as soon as they read the end marker, often before the last HTTP
                # chunk: mitmproxy reports an error, but the stream is whole.
                self._save(flow, state, capture)
                return
            if not client_hung_up(reason):
                # The provider cut the stream: that is what it did, and a replay reproduces the
                # cut, so a client's error handling can be tested. Marked incomplete.
                log.warning("cassette: %s %s was cut off by the upstream (%s); saved as "
                            "incomplete", flow.request.method, flow.request.pretty_url, reason)
                self._save(flow, state, capture)
                return
        self.cassettes.stats.not_saved += 1
        self._abandon(state)
        log.warning("cassette: not saving %s %s: %s before the response was complete",
                    flow.request.method, flow.request.pretty_url, reason)

    def _abandon(self, state: FlowState) -> None:
        store = self.cassettes.store
        if store is not None and state.key is not None and state.slot is not None:
            store.abandon_recording(state.key, state.slot)

    def _save(self, flow: http.HTTPFlow, state: FlowState, capture: StreamCapture | None) -> None:
        c = self.cassettes
        assert c.store is not None and flow.response is not None
        assert state.key is not None and state.slot is not None
        resp = flow.response
        headers = redact.response_headers_for_cassette(resp.headers.items(multi=True),
                                                       c.extra_secret_headers)
        if capture is not None:
            recorded = RecordedResponse(
                status=resp.status_code, headers=headers,
                stream=Stream(capture.format, capture.events, complete=capture.complete))
        else:
            if state.body_tap is not None:
                raw = b"".join(state.body_tap.chunks)
                encoding = resp.headers.get("content-encoding", "")
                if encoding:
                    try:
                        raw = mitm_encoding.decode(raw, encoding)
                    except ValueError:
                        pass
            else:
                raw = resp.get_content(strict=False) or b""
            recorded = RecordedResponse(status=resp.status_code, headers=headers,
                                        body=Body.from_bytes(raw, resp.headers.get("content-type")))
        try:
            c.store.finish_recording(state.key, state.slot, recorded)  # written in background
        except (OSError, ValueError) as e:  # the layout refused the path, or a read-back failed
            c.stats.not_saved += 1
            log.error("cassette: could not record %s %s: %s", flow.request.method,
                      flow.request.pretty_url, e)


cassettes = Cassettes()
pacer = Pacer()
addons = [cassettes, ControlChannel(cassettes), Replayer(cassettes, pacer), Recorder(cassettes),
          pacer]
