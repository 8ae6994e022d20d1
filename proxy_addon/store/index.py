"""The index of a cassette directory: every readable recording under its request's key.

Built once at start-up, so a lookup is a dict access, never a scan. Files that cannot be read
are skipped and remembered with the reason, so the proxy keeps serving the others and a miss
can say that a broken file might have matched.
"""

from __future__ import annotations

import gc
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import orjson

from proxy_addon import formats, hosts, matching
from proxy_addon.formats import cassette
from proxy_addon.matching import CanonicalRequest, IgnorePaths
from proxy_addon.model import CassetteError, Recording
from proxy_addon.secret_rules import BUILT_IN, Secrets
from proxy_addon.store.layout import (
    iter_cassette_files,
    origin_of,
    per_test_dir_of,
    safe_segment,
)

log = logging.getLogger(__name__)

# Recordings in files larger than this are not kept in memory: read again when replayed.
KEEP_IN_MEMORY_BYTES = 8 * 1024 * 1024


@dataclass(slots=True, eq=False)
class Entry:
    """One readable file of the directory, indexed under its request's key. Compared by
    identity: the same file read twice is two entries."""

    path: Path
    held: Recording | None  # None: too large to keep, read from ``path`` when needed
    canonical: CanonicalRequest
    uses: int = 0
    test_dir: str | None = None  # the test's own cassette it belongs to; None: shared
    origin: str = ""  # the host it was recorded for (an any-host recording keeps it too)

    @property
    def recording(self) -> Recording:
        return self.held if self.held is not None else formats.load(self.path)


@dataclass(slots=True)
class BadFile:
    path: Path
    reason: str
    key: str | None = None  # the request's key, when the request part could still be read


@dataclass(slots=True)
class Found:
    """The recordings that answer a request, all equally close to it."""

    counter: str  # the key its calls are counted under (the N-th call, the N-th response)
    entries: list[Entry]
    other_host: str | None = None  # they were recorded for another host than the request's


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class Index:
    """key -> recordings of one directory, with what could not be read."""

    def __init__(self, root: Path, ignore: IgnorePaths = (),
                 max_file_bytes: int = 512 * 1024 * 1024, secrets: Secrets = BUILT_IN) -> None:
        self.root = Path(root)
        self.ignore = tuple(ignore)
        self.secrets = secrets  # what matching leaves out, and what a recording's scrub knows
        self.max_file_bytes = max_file_bytes
        self.entries: dict[str, list[Entry]] = {}
        self.by_endpoint: dict[tuple[str, str], list[Entry]] = defaultdict(list)
        self.bad: list[BadFile] = []

    def load(self) -> None:
        """Index every readable file; remember (and log) the others.

        Loading makes many long-lived objects. The garbage collector is paused meanwhile and
        they are frozen out of its later passes, so start-up and per-request latency stay flat
        with the directory's size (see scripts/bench); objects frozen by an earlier load are
        unfrozen first, so a replaced index can be freed.
        """
        self.entries.clear()
        self.by_endpoint.clear()
        self.bad.clear()
        gc.unfreeze()
        gc.disable()
        try:
            for path in iter_cassette_files(self.root):
                self._load_file(path)
        finally:
            gc.enable()
        gc.freeze()

    def _load_file(self, path: Path) -> None:
        size = _size(path)
        if size > self.max_file_bytes:
            reason = (f"too large ({size / 1048576:.1f} MB, the limit is "
                      f"{self.max_file_bytes / 1048576:.0f} MB: cassette_max_file_mb)")
            self.bad.append(BadFile(path, reason))
            log.warning("cassette: skipping %s: %s", path, reason)
            return
        try:
            rec = formats.load(path)
        except CassetteError as e:
            self.bad.append(BadFile(path, e.reason, self._salvage_key(path)))
            log.warning("cassette: skipping %s: %s", path, e.reason)
            return
        held = rec if size <= KEEP_IN_MEMORY_BYTES else None
        self.add(Entry(path, held, matching.canonical_recorded(rec.request, self.ignore, self.secrets),
                       test_dir=per_test_dir_of(self.root, path), origin=origin_of(rec.request)))

    def add(self, entry: Entry) -> None:
        """Index an entry read from the directory (after the ones read before it)."""
        self.entries.setdefault(entry.canonical.key(), []).append(entry)
        self.by_endpoint[(entry.canonical.method, entry.canonical.path)].append(entry)

    def replace(self, entry: Entry) -> None:
        """Index a file just (re)written, first among its key's entries, in place of any
        earlier entry of the same file."""
        key = entry.canonical.key()
        self.entries[key] = [entry, *(e for e in self.entries.get(key, [])
                                      if e.path != entry.path)]
        endpoint = (entry.canonical.method, entry.canonical.path)
        self.by_endpoint[endpoint] = [e for e in self.by_endpoint[endpoint]
                                      if e.path != entry.path] + [entry]

    def __len__(self) -> int:
        return sum(len(v) for v in self.entries.values())

    def all_entries(self) -> Iterator[Entry]:
        for entries in self.entries.values():
            yield from entries

    def unused(self) -> list[Entry]:
        return [e for e in self.all_entries() if e.uses == 0]

    def find(self, canon: CanonicalRequest, test_dir: str | None = None) -> Found | None:
        """The recordings for a request: exact matches first, then host-agnostic ones; within
        those, the test's own cassette first, then the shared ones (other tests' cassettes
        never answer). Among host-agnostic ones, only those closest to the request's host:
        recorded for that host, else for the same provider family, else any (``hosts``)."""
        for key in (canon.key(), canon.any_host_key()):
            entries = self.entries.get(key)
            if not entries:
                continue
            own = [e for e in entries if e.test_dir == test_dir] if test_dir is not None else []
            group, counter = (own, f"{test_dir}|{key}") if own else \
                ([e for e in entries if e.test_dir is None], f"|{key}")
            if not group:
                continue
            if key == canon.key():
                return Found(counter, group)
            closeness = [hosts.closeness(canon.host, e.origin, canon.path) for e in group]
            best = max(closeness)
            closest = [e for e, c in zip(group, closeness) if c == best]
            return Found(f"{counter}|{canon.host}", closest,
                         other_host=None if best == 2 else closest[0].origin)
        return None

    def nearest(self, canon: CanonicalRequest) -> tuple[Entry, list[str]] | None:
        """The recording of the same endpoint that differs least from ``canon``."""
        candidates = self.by_endpoint.get((canon.method, canon.path), [])
        if not candidates:
            return None
        return matching.nearest(canon, ((e, e.canonical) for e in candidates))

    def _salvage_key(self, path: Path) -> str | None:
        """The key of a broken file's request, if its request part is intact."""
        try:
            doc = orjson.loads(path.read_bytes())
            probe = cassette.from_dict({"version": 1, "request": doc["request"],
                                        "responses": [{"status": 200}]})
            return matching.canonical_recorded(probe.request, self.ignore, self.secrets).key()
        except Exception:  # anything unreadable: nothing to salvage
            return None

    def bad_files_for(self, canon: CanonicalRequest) -> list[BadFile]:
        """Unreadable files that would have matched this request (their request part says so),
        or that sit where this endpoint's cassettes go."""
        keys = {canon.key(), canon.any_host_key()}
        exact = [b for b in self.bad if b.key in keys]
        if exact:
            return exact
        segments = tuple(safe_segment(s) for s in canon.path.split("/") if s)
        out = []
        for bad in self.bad:
            if bad.key is not None:
                continue
            rel = bad.path.relative_to(self.root).parts[:-1] if bad.path.is_relative_to(
                self.root) else ()
            if rel[1:] == segments or not rel:
                out.append(bad)
        return out
