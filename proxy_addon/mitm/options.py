"""The addon's options: declared in ``load`` (with their help), checked in ``configure`` into
one ``Settings`` the hooks read, and the cassette directory opened with them.

A bad value raises ``OptionsError`` naming the option: at start-up mitmdump then stops.

Under plain ``mitmdump -s addon.py``, mitmproxy applies a ``--set cassette_*`` given on the
command line only once the script has declared it, and an error then (an option given twice, a
value of the wrong type) would drop the whole addon without a word, leaving a plain proxy that
forwards everything. So ``load`` applies those values itself and turns such an error into one
mitmdump reports and stops on; ``running`` refuses a ``cassette_*`` name nobody declared (a
typo). The launcher (``mitm/launch.py``, used by ``cassette run``, ``cassette proxy`` and the
pytest plugin) declares the options before the command line is read instead.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import threading
from collections.abc import Sequence  # mitmproxy's --set parses only this Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from mitmproxy import ctx, exceptions

from proxy_addon import formats
from proxy_addon.matching import canonical, normalize
from proxy_addon.matching.jsonpath import parse_path
from proxy_addon.mitm.settings import Settings
from proxy_addon.mitm.state import State
from proxy_addon.redaction.secret_rules import Secrets
from proxy_addon.runner.interface import DEFAULT_INTERFACE, INTERFACES, spell
from proxy_addon.serving.incidental import in_force
from proxy_addon.store import CassetteStore, age, index_cache
from proxy_addon.store.cache import BUDGET_BYTES
from proxy_addon.store.writer import BackgroundWriter
from proxy_addon.summary import INDEXING, MODES, NEEDS_RECORDINGS

log = logging.getLogger("proxy_addon")

STALE_POLICIES = ("warn", "fail")
# Modes that answer from the cassettes before any upstream connection exists.
ANSWERING_MODES = ("replay", "auto", "refresh")
# The options whose change means the directory is read again under the new rules.
STORE_OPTIONS = frozenset(
    {
        "cassette_dir",
        "cassette_ignore",
        "cassette_host_map",
        "cassette_normalize",
        "cassette_mode",
        "cassette_max_file_mb",
        "cassette_cache_mb",
        "cassette_redact_fields",
        "cassette_redact_headers",
        "cassette_index_cache",
    }
)
# Indexing still under way after this many seconds: say so, once (a large folder, no saved index).
SLOW_START_SECONDS = 1.0


def parse_pace(value: str) -> float:
    try:
        pace = float(value)
    except ValueError:
        raise exceptions.OptionsError(
            f"cassette_pace must be a number such as 0, 0.5 or 1, not {value!r}"
        ) from None
    if not math.isfinite(pace) or pace < 0:
        raise exceptions.OptionsError(f"cassette_pace must be a finite number >= 0, not {value!r}")
    return pace


def split_list(values: Sequence[str]) -> list[str]:
    """A list option's items: ``--set x=a --set x=b`` and ``--set x=a,b`` both work."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


OPTION_PREFIX = "cassette_"


def undeclared(options: Any) -> list[str]:
    """``cassette_*`` names given (``--set``, config.yaml) that no addon declared: typos, which
    mitmproxy would keep aside forever without a word."""
    return sorted(name for name in options.deferred if name.startswith(OPTION_PREFIX))


class Options:
    """Declares and checks the ``cassette_*`` options; keeps ``state.settings`` and
    ``state.store`` in step with them."""

    def __init__(self, state: State) -> None:
        self.state = state

    def load(self, loader: Any) -> None:
        self._declare(loader)
        options = loader.master.options
        try:
            # what mitmproxy does right after this hook, where an OptionsError would silently
            # unload the addon (addonmanager.register -> process_deferred)
            options.process_deferred()
        except exceptions.OptionsError as e:
            known = set(options.keys())
            for name in [n for n in options.deferred if n in known]:
                del options.deferred[name]  # or every later script's load fails on it again
            # not an OptionsError, which mitmproxy would swallow: logged, mitmdump stops
            raise RuntimeError(f"cassette: bad option: {e}") from None

    def running(self) -> None:
        unknown = undeclared(ctx.options)
        if unknown:
            raise RuntimeError(
                f"cassette: unknown option(s) {', '.join(unknown)}: see mitmdump --options"
            )

    def _declare(self, loader: Any) -> None:
        loader.add_option(
            "cassette_dir",
            str,
            "cassettes",
            "Directory of cassettes: read at start-up, written when recording.",
        )
        loader.add_option(
            "cassette_mode",
            str,
            "replay",
            "replay: answer from cassettes, never touch the network; record: "
            "forward everything and (re)write cassettes; auto: replay hits and "
            "record misses; passthrough: forward, record nothing; refresh: "
            "re-record what has a recording (with cassette_max_age, only those "
            "older), in its own file; a miss is a 424 as in replay.",
            choices=MODES,
        )
        loader.add_option(
            "cassette_pace",
            str,
            "0",
            "Replay speed of streams, a number: 0 = as fast as possible, "
            "1 = with the recorded gaps between events, 0.5 = twice as fast.",
        )
        loader.add_option(
            "cassette_ignore",
            Sequence[str],
            [],
            "Dotted JSON paths left out of request matching, e.g. user, "
            "metadata.trace_id, messages[0].name, messages.*.name.",
        )
        loader.add_option(
            "cassette_incidental",
            Sequence[str],
            [],
            "Requests not under test, METHOD HOST/PATH [STATUS] (globs; STATUS default "
            "204), e.g. 'POST telemetry.example.com/v1/*': a replay answers them with "
            "STATUS, the other modes forward them; never recorded.",
        )
        loader.add_option(
            "cassette_incidental_builtin",
            bool,
            True,
            "Also treat as incidental the built-in list of frameworks' own requests "
            "(LiteLLM's price map, OpenAI Agents SDK traces, LangSmith, Logfire, ...).",
        )
        loader.add_option(
            "cassette_host_map",
            Sequence[str],
            [],
            "FROM=TO host[:port] pairs: requests to FROM are matched as if sent to TO, "
            "e.g. localhost:8000=127.0.0.1:8000 (recordings made for one base URL answer "
            "another).",
        )
        loader.add_option(
            "cassette_normalize",
            Sequence[str],
            [],
            "Volatile values in request strings replaced for matching only: "
            "presets dates, times, uuids, hex-ids (comma-separated; their forms are "
            "in the README), or a rule PATTERN=REPLACEMENT (a regex; one rule per "
            "value). A recording of the very request still answers first; answers "
            "that matched only after normalising are counted in the summary.",
        )
        loader.add_option(
            "cassette_max_age",
            str,
            "",
            "Recordings older than this (30d, 12h, 2w) are stale: a replay warns "
            "(or fails, cassette_stale=fail); refresh mode re-records only them.",
        )
        loader.add_option(
            "cassette_stale",
            str,
            "warn",
            "A replay hit on a stale recording: warn (answered, counted) or fail "
            "(an HTTP 410 error, counted, and the run fails).",
            choices=STALE_POLICIES,
        )
        loader.add_option(
            "cassette_redact_headers",
            Sequence[str],
            [],
            "More request/response header names whose values never reach disk.",
        )
        loader.add_option(
            "cassette_redact_fields",
            Sequence[str],
            [],
            "More field names whose values never reach disk, at any depth of a "
            "JSON body, form or query (api_key-style), or dotted paths from a "
            "body's root (metadata.user_token, messages.*.secret).",
        )
        loader.add_option(
            "cassette_max_file_mb",
            int,
            formats.MAX_FILE_BYTES >> 20,
            "Skip (with a warning) cassette files larger than this many MB.",
        )
        loader.add_option(
            "cassette_cache_mb",
            int,
            BUDGET_BYTES // (1024 * 1024),
            "Keep at most this many MB of recently replayed cassette files parsed in memory "
            "(the least recently used are read again when next replayed).",
        )
        loader.add_option(
            "cassette_index_cache",
            str,
            "",
            "Where the index of cassette_dir is saved between runs, so that a start over "
            "unchanged files reads no cassette: a folder (default: "
            "$XDG_CACHE_HOME/llm-cassette-proxy/index, else ~/.cache/...), or off.",
        )
        loader.add_option(
            "cassette_summary",
            str,
            "",
            "Write the run's summary (hits, recorded, misses, unused recordings, "
            "miss messages) as JSON to this file when the proxy stops.",
        )
        loader.add_option(
            "cassette_interface",
            str,
            DEFAULT_INTERFACE,
            "Which interface started the proxy, so its messages spell options as it does: "
            "mitmdump, run (cassette run), proxy (cassette proxy), pytest.",
            choices=tuple(INTERFACES),
        )

    def configure(self, updated: set[str]) -> None:
        opts = ctx.options
        state = self.state
        state.settings = settings = _settings(state.settings, updated)
        if (
            updated & {"cassette_mode", "stream_large_bodies"}
            and opts.stream_large_bodies
            and settings.mode != "passthrough"
        ):
            # mitmproxy would stream such a request upstream before our request hook sees it
            # (a replay could not answer it) and hand us no body to record
            raise exceptions.OptionsError(
                f"stream_large_bodies cannot be used in {settings.mode} mode: the addon "
                "needs each body whole (streamed responses are tapped without it)"
            )
        if (
            "cassette_mode" in updated
            and settings.mode in ANSWERING_MODES
            and opts.connection_strategy != "lazy"
        ):
            # Answer from cassettes before any upstream connection exists: offline, a CONNECT
            # to api.openai.com must not make mitmproxy resolve and dial it first.
            opts.update(connection_strategy="lazy")
        if updated & STORE_OPTIONS:
            open_store(state, Path(opts.cassette_dir))


def _settings(before: Settings, updated: set[str]) -> Settings:
    """The settings after the options in ``updated`` changed (``OptionsError`` naming a bad
    one); the others are kept as they were."""
    opts = ctx.options
    changes: dict[str, Any] = {}
    rules: dict[str, Any] = {}
    if "cassette_mode" in updated:
        if opts.cassette_mode not in MODES:
            # mitmproxy does not enforce `choices` for values given with --set
            raise exceptions.OptionsError(
                f"cassette_mode must be one of {', '.join(MODES)}, not {opts.cassette_mode!r}"
            )
        changes["mode"] = opts.cassette_mode
    if "cassette_pace" in updated:
        changes["pace"] = parse_pace(opts.cassette_pace)
    if "cassette_ignore" in updated:
        try:
            rules["ignore"] = tuple(parse_path(p) for p in split_list(opts.cassette_ignore))
        except ValueError as e:
            raise exceptions.OptionsError(f"cassette_ignore: {e}") from None
    if "cassette_normalize" in updated:
        try:
            rules["normalize"] = normalize.compile_rules(opts.cassette_normalize)
        except ValueError as e:
            raise exceptions.OptionsError(f"cassette_normalize: {e}") from None
    if "cassette_host_map" in updated:
        try:
            rules["host_map"] = canonical.parse_host_map(split_list(opts.cassette_host_map))
        except ValueError as e:
            raise exceptions.OptionsError(f"cassette_host_map: {e}") from None
    if updated & {"cassette_incidental", "cassette_incidental_builtin"}:
        try:
            changes["incidental"] = in_force(
                split_list(opts.cassette_incidental), opts.cassette_incidental_builtin
            )
        except ValueError as e:
            raise exceptions.OptionsError(f"cassette_incidental: {e}") from None
    if "cassette_max_age" in updated:
        text = opts.cassette_max_age.strip()
        try:
            changes["max_age"] = age.parse_age(text) if text else None
        except ValueError as e:
            raise exceptions.OptionsError(f"cassette_max_age: {e}") from None
        changes["max_age_text"] = text
    if "cassette_stale" in updated:
        if opts.cassette_stale not in STALE_POLICIES:
            raise exceptions.OptionsError(
                f"cassette_stale must be warn or fail, not {opts.cassette_stale!r}"
            )
        changes["stale_policy"] = opts.cassette_stale
    if updated & {"cassette_redact_fields", "cassette_redact_headers"}:
        try:
            rules["secrets"] = Secrets.from_settings(
                split_list(opts.cassette_redact_fields),
                split_list(opts.cassette_redact_headers),
                os.environ,
            )
        except ValueError as e:
            raise exceptions.OptionsError(f"cassette_redact_fields: {e}") from None
    if "cassette_max_file_mb" in updated:
        if opts.cassette_max_file_mb <= 0:
            raise exceptions.OptionsError("cassette_max_file_mb must be a positive number of MB")
        changes["max_file_bytes"] = opts.cassette_max_file_mb * 1024 * 1024
    if "cassette_cache_mb" in updated:
        if opts.cassette_cache_mb < 0:
            raise exceptions.OptionsError("cassette_cache_mb must be 0 or a positive number of MB")
        changes["cache_bytes"] = opts.cassette_cache_mb * 1024 * 1024
    if "cassette_summary" in updated:
        changes["summary_path"] = opts.cassette_summary
    if "cassette_interface" in updated:
        if opts.cassette_interface not in INTERFACES:
            raise exceptions.OptionsError(
                f"cassette_interface must be one of {', '.join(INTERFACES)}, "
                f"not {opts.cassette_interface!r}"
            )
        changes["interface"] = opts.cassette_interface
    if "cassette_index_cache" in updated:
        where = opts.cassette_index_cache.strip()
        changes["index_cache"] = (
            None
            if where == "off"
            else Path(where).absolute()
            if where
            else index_cache.default_folder(os.environ)
        )
    if rules:
        changes["rules"] = replace(before.rules, **rules)
    return replace(before, **changes) if changes else before


def open_store(state: State, root: Path) -> None:
    """Read the cassette directory under the current settings, into ``state.store``."""
    settings = state.settings
    mode = settings.mode
    if mode in NEEDS_RECORDINGS and not root.is_dir():
        record = spell(settings.interface, "cassette_mode", "record")
        auto = spell(settings.interface, "cassette_mode", "auto")
        raise exceptions.OptionsError(
            f"cassette_dir {str(root)!r} is not a directory: nothing to {mode} "
            f"(record first with {record} or {auto})"
        )
    if root.exists() and not root.is_dir():
        raise exceptions.OptionsError(f"cassette_dir {str(root)!r} is not a directory")
    if state.writer is None:
        state.writer = BackgroundWriter(state.written)
    store = CassetteStore(
        root,
        settings.rules,
        max_file_bytes=settings.max_file_bytes,
        writer=state.writer,
        cache_bytes=settings.cache_bytes,
        cache_folder=settings.index_cache,
    )
    notice = threading.Timer(
        SLOW_START_SECONDS,
        lambda: log.info(
            f"{INDEXING} {store.index.found:,} recordings in {root}…"
            if store.index.found  # else the folder is still being listed
            else f"{INDEXING} the recordings in {root}…"
        ),
    )
    notice.daemon = True
    notice.start()
    try:
        _load_without_collecting(store)
    finally:
        notice.cancel()
    state.store = store
    bad = len(store.index.bad)
    done = store.index.indexing
    log.info(
        "cassette: %d recordings in %s (%s mode), indexed in %.2f s%s%s",
        len(store),
        root,
        mode,
        done.seconds,
        f" ({done.from_cache:,} from the saved index)" if done.from_cache else "",
        f", {bad} unreadable files skipped" if bad else "",
    )


def _load_without_collecting(store: CassetteStore) -> None:
    """Index the directory with the garbage collector paused, then freeze what it made out of
    the collector's later passes, so start-up and per-request latency stay flat with the
    directory's size (see scripts/bench). Done here, in mitmdump's process, never by the store
    itself: a process that imports the store (the pytest plugin's, a user's) keeps its own
    collector settings. Objects frozen by an earlier load are unfrozen first, so a replaced
    index can be freed."""
    gc.unfreeze()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        store.load()
    finally:
        if was_enabled:
            gc.enable()
    gc.freeze()
