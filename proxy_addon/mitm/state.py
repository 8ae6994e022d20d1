"""The options (declared in ``load``, checked in ``configure``) and what the hooks share: the
store, the counters, the test being run; and what the addon decided about each flow."""

# Package modules may use string annotations; only proxy_addon/addon.py is run as a script.
from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence  # mitmproxy's --set parses only this Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, TypeVar

import orjson
from mitmproxy import ctx, exceptions, http

from proxy_addon import age, normalize, redact
from proxy_addon.control import CurrentTest
from proxy_addon.jsonpath import parse_path
from proxy_addon.loopback import LoopbackServer
from proxy_addon.matching import CanonicalRequest
from proxy_addon.model import RecordedRequest
from proxy_addon.normalize import Normalizer
from proxy_addon.secret_rules import BUILT_IN, Secrets
from proxy_addon.sse import BodyTap, StreamCapture, decode_limited
from proxy_addon.store import CassetteStore
from proxy_addon.store.index import Entry
from proxy_addon.store.writer import BackgroundWriter, atomic_write
from proxy_addon.summary import MODES, NEEDS_RECORDINGS, NOTHING_REACHED, Counters
from proxy_addon.websocket import Capture

log = logging.getLogger("proxy_addon")

META = "cassette"  # key of our FlowState in flow.metadata
T = TypeVar("T")
# A content-encoded request body is decoded for matching and recording up to this size; beyond
# it (a decompression bomb) it is matched and stored by its bytes as sent.
MAX_DECODED_REQUEST = 64 * 1024 * 1024
STALE_POLICIES = ("warn", "fail")
# Modes that answer from the cassettes before any upstream connection exists.
ANSWERING_MODES = ("replay", "auto", "refresh")


@dataclass(slots=True)
class FlowState:
    """What the addon decided about one flow, kept in ``flow.metadata[META]``."""

    canonical: CanonicalRequest
    action: str  # "hit", "miss", "stale", "record", "pass"
    test_id: str | None = None
    test_dir: str | None = None
    secrets: Secrets = BUILT_IN  # the rules, knowing this flow's own key (memory only)
    key: str | None = None  # its place in the store's recorder (record)
    slot: int | None = None
    request: RecordedRequest | None = None  # as it is written (record)
    capture: StreamCapture | None = None
    body_tap: BodyTap | None = None
    headers_at: float = 0.0  # when the response headers arrived (monotonic)
    # the loopback server answering it (the pacer, the WebSocket replay) and its token
    loopback: tuple[LoopbackServer[Any], str] | None = None
    websocket: Capture | None = None  # a WebSocket conversation being recorded
    refresh: Entry | None = None  # the recording this flow re-records, in its own file (refresh)


async def send_to_loopback(flow: http.HTTPFlow, st: FlowState, server: LoopbackServer[T],
                           item: T, state: State) -> None:
    """Point the flow at one of the addon's loopback servers (which the connection guard
    admits), to be answered with ``item``, under a one-time token the flow carries."""
    port = await server.ensure_started()
    state.own_servers.add(("127.0.0.1", port))
    token = server.register(item)
    st.loopback = (server, token)
    flow.request.scheme, flow.request.host, flow.request.port = "http", "127.0.0.1", port
    flow.request.headers[server.token_header] = token


def flow_state(flow: http.HTTPFlow, action: str | None = None) -> FlowState | None:
    """The flow's state, if the addon took it (and decided ``action``, when given)."""
    state = flow.metadata.get(META)
    if not isinstance(state, FlowState) or (action is not None and state.action != action):
        return None
    return state


def shown_url(flow: http.HTTPFlow, secrets: Secrets) -> str:
    """The flow's URL as a log line may show it: user info, secret query values and known
    secrets (the flow's own key too) replaced."""
    st = flow_state(flow)
    return redact.redact_url(flow.request.pretty_url, st.secrets if st is not None else secrets)


def body_of(message: http.Message, raw: bytes | None = None,
            limit: int = MAX_DECODED_REQUEST) -> bytes:
    """A request's or response's body (or ``raw``, bytes a tap kept of it), decoded from its
    ``content-encoding`` when that can be done within ``limit`` bytes; otherwise as it came."""
    raw = (message.raw_content if raw is None else raw) or b""
    encoding = message.headers.get("content-encoding", "")
    if not raw or not encoding.strip():
        return raw
    decoded = decode_limited(raw, encoding, limit)
    return decoded if decoded is not None else raw


def parse_pace(value: str) -> float:
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


class State:
    """Options, the store, the counters and the current test, shared by the hooks."""

    def __init__(self) -> None:
        self.store: CassetteStore | None = None
        self.counters = Counters()
        self.current = CurrentTest()
        self.writer: BackgroundWriter | None = None
        self.pace = 0.0
        self.ignore: tuple[tuple[str | int, ...], ...] = ()
        self.normalize: Normalizer | None = None
        self.max_age: timedelta | None = None
        self.secrets: Secrets = BUILT_IN
        # the addon's own loopback servers: the only upstreams a replay may connect to
        self.own_servers: set[tuple[str, int]] = set()
        # in refresh mode, the hosts a re-recording was forwarded to: the only others allowed
        self.refresh_upstreams: set[tuple[str, int]] = set()

    def load(self, loader: Any) -> None:
        loader.add_option("cassette_dir", str, "cassettes",
                          "Directory of cassettes: read at start-up, written when recording.")
        loader.add_option("cassette_mode", str, "replay",
                          "replay: answer from cassettes, never touch the network; record: "
                          "forward everything and (re)write cassettes; auto: replay hits and "
                          "record misses; passthrough: forward, record nothing; refresh: "
                          "re-record what has a recording (with cassette_max_age, only those "
                          "older), in its own file; a miss is a 404 as in replay.",
                          choices=MODES)
        loader.add_option("cassette_pace", str, "0",
                          "Replay speed of streams, a number: 0 = as fast as possible, "
                          "1 = with the recorded gaps between events, 0.5 = twice as fast.")
        loader.add_option("cassette_ignore", Sequence[str], [],
                          "Dotted JSON paths left out of request matching, e.g. user, "
                          "metadata.trace_id, messages[0].name, messages.*.name.")
        loader.add_option("cassette_normalize", Sequence[str], [],
                          "Volatile values in request strings replaced for matching only: "
                          "presets dates, times, uuids, hex-ids (comma-separated), or a rule "
                          "PATTERN=REPLACEMENT (a regex; one rule per value).")
        loader.add_option("cassette_max_age", str, "",
                          "Recordings older than this (30d, 12h, 2w) are stale: a replay warns "
                          "(or fails, cassette_stale=fail); refresh mode re-records only them.")
        loader.add_option("cassette_stale", str, "warn",
                          "A replay hit on a stale recording: warn (answered, counted) or fail "
                          "(an HTTP 410 error, counted, and the run fails).",
                          choices=STALE_POLICIES)
        loader.add_option("cassette_redact_headers", Sequence[str], [],
                          "More request/response header names whose values never reach disk.")
        loader.add_option("cassette_redact_fields", Sequence[str], [],
                          "More field names whose values never reach disk, at any depth of a "
                          "JSON body, form or query (api_key-style), or dotted paths from a "
                          "body's root (metadata.user_token, messages.*.secret).")
        loader.add_option("cassette_max_file_mb", int, 512,
                          "Skip (with a warning) cassette files larger than this many MB.")
        loader.add_option("cassette_summary", str, "",
                          "Write the run's summary (hits, recorded, misses, unused recordings, "
                          "miss messages) as JSON to this file when the proxy stops.")

    def configure(self, updated: set[str]) -> None:
        opts = ctx.options
        if "cassette_mode" in updated and opts.cassette_mode not in MODES:
            # mitmproxy does not enforce `choices` for values given with --set
            raise exceptions.OptionsError(
                f"cassette_mode must be one of {', '.join(MODES)}, not {opts.cassette_mode!r}")
        if "cassette_pace" in updated:
            self.pace = parse_pace(opts.cassette_pace)
        if "cassette_ignore" in updated:
            try:
                self.ignore = tuple(parse_path(p) for p in split_list(opts.cassette_ignore))
            except ValueError as e:
                raise exceptions.OptionsError(f"cassette_ignore: {e}") from None
        self._configure_validity(updated)
        if updated & {"cassette_redact_fields", "cassette_redact_headers"}:
            try:
                self.secrets = Secrets.from_settings(split_list(opts.cassette_redact_fields),
                                                     split_list(opts.cassette_redact_headers),
                                                     os.environ)
            except ValueError as e:
                raise exceptions.OptionsError(f"cassette_redact_fields: {e}") from None
        if updated & {"cassette_mode", "stream_large_bodies"} and opts.stream_large_bodies and \
                opts.cassette_mode != "passthrough":
            # mitmproxy would stream such a request upstream before our request hook sees it
            # (a replay could not answer it) and hand us no body to record
            raise exceptions.OptionsError(
                f"stream_large_bodies cannot be used in {opts.cassette_mode} mode: the addon "
                "needs each body whole (streamed responses are tapped without it)")
        if "cassette_mode" in updated and opts.cassette_mode in ANSWERING_MODES and \
                opts.connection_strategy != "lazy":
            # Answer from cassettes before any upstream connection exists: offline, a CONNECT
            # to api.openai.com must not make mitmproxy resolve and dial it first.
            opts.update(connection_strategy="lazy")
        if "cassette_max_file_mb" in updated and opts.cassette_max_file_mb <= 0:
            raise exceptions.OptionsError("cassette_max_file_mb must be a positive number of MB")
        if updated & {"cassette_dir", "cassette_ignore", "cassette_normalize", "cassette_mode",
                      "cassette_max_file_mb", "cassette_redact_fields",
                      "cassette_redact_headers"}:
            self._open_store(Path(opts.cassette_dir))

    def _configure_validity(self, updated: set[str]) -> None:
        """The options that keep cassettes valid: normalisers, the age limit, its policy."""
        opts = ctx.options
        if "cassette_normalize" in updated:
            try:
                self.normalize = normalize.compile_rules(opts.cassette_normalize)
            except ValueError as e:
                raise exceptions.OptionsError(f"cassette_normalize: {e}") from None
        if "cassette_max_age" in updated:
            try:
                self.max_age = age.parse_age(opts.cassette_max_age) \
                    if opts.cassette_max_age.strip() else None
            except ValueError as e:
                raise exceptions.OptionsError(f"cassette_max_age: {e}") from None
        if "cassette_stale" in updated and opts.cassette_stale not in STALE_POLICIES:
            raise exceptions.OptionsError(f"cassette_stale must be warn or fail, not "
                                          f"{opts.cassette_stale!r}")

    def _open_store(self, root: Path) -> None:
        mode = ctx.options.cassette_mode
        if mode in NEEDS_RECORDINGS and not root.is_dir():
            raise exceptions.OptionsError(
                f"cassette_dir {str(root)!r} is not a directory: nothing to {mode} "
                "(record first with --set cassette_mode=record or auto)")
        if root.exists() and not root.is_dir():
            raise exceptions.OptionsError(f"cassette_dir {str(root)!r} is not a directory")
        if self.writer is None:
            self.writer = BackgroundWriter(self._written)
        store = CassetteStore(root, self.ignore, max_file_bytes=self.max_file_bytes,
                              writer=self.writer, normalize=self.normalize,
                              secrets=self.secrets)
        store.load()
        self.store = store
        bad = len(store.index.bad)
        log.info("cassette: %d recordings in %s (%s mode)%s", len(store), root, mode,
                 f", {bad} unreadable files skipped" if bad else "")

    def miss(self, message: str, counter: str = "misses", logged: bool = False) -> None:
        """A replay miss (or a stale recording refused, under ``counter``): counted, kept for
        the summary and the current test, and logged unless the caller did already."""
        self.counters.add(counter)
        self.counters.note("miss_messages", message)
        self.current.misses.append(message)
        if not logged:
            log.warning(message)

    def fault_reporter(self, doing: str) -> Callable[[Exception], None]:
        """What a loopback server calls on a fault while ``doing`` its answer (outside any
        hook, so outside the guard): counted like a hook's fault, and logged."""

        def fault(error: Exception) -> None:
            self.counters.add("internal_errors")
            log.error("cassette: internal error while %s: %s: %s", doing,
                      type(error).__name__, error, exc_info=error)
        return fault

    @property
    def mode(self) -> str:
        return ctx.options.cassette_mode

    @property
    def stale_policy(self) -> str:
        return ctx.options.cassette_stale

    @property
    def max_age_text(self) -> str:
        return ctx.options.cassette_max_age.strip()

    @property
    def max_file_bytes(self) -> int:
        return ctx.options.cassette_max_file_mb * 1024 * 1024

    def _written(self, path: Path, error: Exception | None) -> None:
        """Called on the writer's thread after each cassette write."""
        if error is None:
            self.counters.add("recorded")
            log.info("cassette: recorded %s", path)
        else:
            self.counters.add("write_errors")
            reason = error.strerror if isinstance(error, OSError) and error.strerror else error
            log.error("cassette: could not write the cassette %s: %s", path, reason)

    def done(self) -> None:
        if self.writer is not None:
            self.writer.close()  # every finished recording reaches the disk before we exit
        if self.store is None:
            return
        index = self.store.index
        summary = self.counters.snapshot(
            len(index), sorted(str(e.path) for e in index.unused()),
            [{"path": str(b.path), "reason": b.reason} for b in index.bad])
        log.warning(summary.line())
        if summary.requests == 0:  # plain mitmdump too: a run that tested nothing says so
            log.warning("cassette: warning: %s", NOTHING_REACHED)
        if ctx.options.cassette_summary:
            try:
                atomic_write(Path(ctx.options.cassette_summary),
                             orjson.dumps(summary.to_json(), option=orjson.OPT_INDENT_2))
            except OSError as e:
                log.error("cassette: could not write the summary to %s: %s",
                          ctx.options.cassette_summary, e.strerror)
