"""What the hooks share, and only that: the settings (``options``), the store, the counters,
the test being run, the background writer, and the addon's own servers; what a miss, a fault
or a finished write does to the counters; and the summary when the proxy stops."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import orjson

from proxy_addon.mitm.settings import Settings
from proxy_addon.reports.publish import publish
from proxy_addon.runner.control import CurrentTest
from proxy_addon.store import CassetteStore
from proxy_addon.store.writer import BackgroundWriter, atomic_write
from proxy_addon.summary import NOTHING_REACHED, Counters

log = logging.getLogger("proxy_addon")


class State:
    """The store, the counters, the current test and the settings, shared by the hooks."""

    def __init__(self) -> None:
        self.settings: Settings = Settings()
        self.store: CassetteStore | None = None
        self.counters = Counters()
        self.current = CurrentTest()
        self.writer: BackgroundWriter | None = None
        # the addon's own loopback servers: the only upstreams a replay may connect to
        self.own_servers: set[tuple[str, int]] = set()
        # in refresh mode, the hosts a re-recording was forwarded to: the only others allowed
        self.refresh_upstreams: set[tuple[str, int]] = set()
        self.ready = False  # start-up is over and nothing stopped it (mitm/launch.py)

    def status(self) -> dict[str, object]:
        """What the control channel's ``GET /status`` answers: whether the addon is configured
        and started, in which mode, over which directory, for which interface."""
        store = self.store
        return {
            "ready": self.ready and store is not None,
            "mode": self.settings.mode,
            "dir": str(store.root.resolve()) if store is not None else None,
            "interface": self.settings.interface,
            "recordings": len(store) if store is not None else 0,
        }

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
            log.error(
                "cassette: internal error while %s: %s: %s",
                doing,
                type(error).__name__,
                error,
                exc_info=error,
            )

        return fault

    def written(self, path: Path, error: Exception | None) -> None:
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
            self.settings.mode,
            len(index),
            sorted(self.store.recorder.created),
            sorted(index.unused()),
            [{"path": str(b.path), "reason": b.reason} for b in index.bad],
            asdict(index.indexing),
        )
        log.warning(summary.line())
        if summary.reached_nothing:  # plain mitmdump too: a run that tested nothing says so
            log.warning("cassette: warning: %s", NOTHING_REACHED)
        target = self.settings.summary_path
        if target:
            try:
                atomic_write(
                    Path(target), orjson.dumps(summary.to_json(), option=orjson.OPT_INDENT_2)
                )
            except OSError as e:
                log.error("cassette: could not write the summary to %s: %s", target, e.strerror)
        settings = self.settings
        publish(summary, settings.mode, settings.reports, os.environ, print, log.warning)
