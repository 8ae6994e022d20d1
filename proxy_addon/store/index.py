"""The index of a cassette directory: every readable recording under its request's key.

Built once at start-up, so a lookup is a dict access, never a scan. Only the requests are parsed
then (``formats.head_of``); a recording's responses are parsed when it is first replayed
(``cache``), or at once when the CLI validates every file. Files that cannot be read are
skipped and remembered with the reason, so the proxy keeps serving the others and a miss can say
that a broken file might have matched; a file whose responses turn out broken when first used is
skipped the same way then. The index can be saved between runs (``index_cache``): a start over
an unchanged folder then reads the saved rows and a stat of each file, and reads only the files
that changed; a file's entry is made from its saved row when first needed (``entries``). A
load of many files shares the reading with forked processes (``fanout``), and gives what one
process gives.
"""

from __future__ import annotations

import logging
import marshal
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import orjson

from proxy_addon import formats
from proxy_addon.formats import cassette
from proxy_addon.matching import difference, hosts, volatile
from proxy_addon.matching.canonical import (
    DEFAULT_RULES,
    CanonicalRequest,
    Request,
    Rules,
    canonicalize,
)
from proxy_addon.model import CassetteError, RecordedRequest
from proxy_addon.store import fanout, index_cache
from proxy_addon.store.cache import BUDGET_BYTES, RecordingCache
from proxy_addon.store.entries import SAVED_FIELDS, Entries, Entry, SavedRows, make_entry
from proxy_addon.store.index_cache import Indexing
from proxy_addon.store.layout import cassette_files, safe_segment

log = logging.getLogger(__name__)

NEAREST_CANDIDATES = 200  # recordings of an endpoint compared to explain a miss
READS_PER_PROCESS = 1_000  # fewer files are read in one process (40 ms; a fork costs 5 ms)


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
    normalised: bool = False  # they match only once both sides are normalised
    # recordings that normalise alike but whose originals are further from the request's
    passed_over: tuple[Entry, ...] = ()


class Index:
    """key -> recordings of one directory, with what could not be read."""

    def __init__(
        self,
        root: Path,
        rules: Rules = DEFAULT_RULES,
        max_file_bytes: int = 512 * 1024 * 1024,
        validate: bool = False,
        cache_bytes: int = BUDGET_BYTES,
        cache_folder: Path | None = None,
        processes: int | None = None,
    ) -> None:
        self.root = Path(root)
        # what matching leaves out and replaces (the normaliser too), applied to stored requests
        # as to live ones; its secrets are also what a recording's scrub knows
        self.rules = rules
        self.max_file_bytes = max_file_bytes
        self.validate = validate  # read every file whole at load (the CLI), not only requests
        # where the index is saved between runs (None: never; the CLI reads every file whole)
        self.cache_folder = None if validate else cache_folder
        self.processes = processes  # that a load may use (None: ``fanout.processes()``)
        self.found = 0  # cassette files found by the load under way (the slow start-up notice)
        self.indexing = Indexing()
        self._root_text = os.fspath(self.root)
        self.cache = RecordingCache(cache_bytes, max_file_bytes)
        self.entries = Entries(self.cache)
        self.bad: list[BadFile] = []

    def load(self) -> None:
        """Index every readable file; remember (and log) the others. Nothing process-wide is
        touched here (the garbage collector is the caller's: ``mitm/options.py`` pauses it)."""
        started = time.perf_counter()
        self.entries = Entries(self.cache)
        self.bad.clear()
        files = list(cassette_files(self.root))
        self.found = len(files)
        saved = self._saved_index()
        if saved is None:
            for place, entry in enumerate(self._read(files)):
                if entry is not None:
                    self.entries.add(entry, place)
            self.indexing = Indexing(files=len(files), read=len(files))
        else:
            skip = len(self._root_text) + 1
            self.indexing, rows, places, read = saved.load(files, skip, self._read, self.processes)
            for place, entry in read:  # placed among the saved rows (``Entries.restore``)
                entry.place = place
            prefix = files[0][:skip] if files else ""
            self.entries.restore(
                SavedRows(prefix, rows.paths, rows.columns, places), [e for _, e in read]
            )
        self.indexing.seconds = time.perf_counter() - started

    def _saved_index(self) -> index_cache.IndexCache | None:
        if self.cache_folder is None:
            return None
        try:
            fingerprint = index_cache.fingerprint(self.rules, self.max_file_bytes)
        except (OSError, TypeError) as e:
            log.info("cassette: the index is not saved: %s", e)
            return None
        return index_cache.IndexCache(self.cache_folder, self._root_text, SAVED_FIELDS, fingerprint)

    def _read(self, files: list[str]) -> list[Entry | None]:
        """Each file's entry, None for a bad one (remembered and logged), in order: shared
        with forked processes (``fanout``) when there are many, but when every file is read
        whole (the CLI keeps what it reads)."""
        if self.validate:
            results = self._read_chunk(files)
        else:
            results = []
            for chunk in fanout.fan_out(
                files,
                self._read_chunk,
                READS_PER_PROCESS,
                self.processes,
                encode=_encoded_reads,
                decode=self._decoded_reads,
            ):
                results += chunk
        entries: list[Entry | None] = []
        for result in results:
            if isinstance(result, BadFile):
                self.bad.append(result)
                log.warning("cassette: skipping %s: %s", result.path, result.reason)
                entries.append(None)
            else:
                entries.append(result)
        return entries

    def _read_chunk(self, files: Sequence[str]) -> list[Entry | BadFile]:
        return [self._read_one(file) for file in files]

    def _read_one(self, file: str) -> Entry | BadFile:
        """The file's entry (not indexed yet), or why it cannot be read. Logs nothing: it may
        run in a forked process."""
        try:
            raw = formats.read_bytes(file, self.max_file_bytes)
            if self.validate:
                rec = formats.loads(raw, file)
                self.cache.keep(file, rec, len(raw))  # read whole once: kept for its use
                head = formats.Head(rec.request, rec.test_id, rec.source)
            else:
                head = formats.head_of(raw, file)
        except CassetteError as e:
            return BadFile(
                Path(file),
                e.reason,
                None if e.reason.startswith("too large") else self._salvage_key(Path(file)),
            )
        return make_entry(
            file,
            head.request,
            self.canonical(head.request),
            head.test_id,
            self._root_text,
            self.cache,
            head.source == "llama-stack",
        )

    def _decoded_reads(self, raw: bytes) -> list[Entry | BadFile]:
        """``_encoded_reads`` read back: the entries made anew with this index's cache."""
        results: list[Entry | BadFile] = []
        for row in marshal.loads(raw):
            if len(row) == 3:  # a bad file: path, reason, key
                results.append(BadFile(Path(row[0]), row[1], row[2]))
            else:  # an entry: its file, then SAVED_FIELDS
                results.append(Entry(*row, cache=self.cache))  # type: ignore[misc]
        return results

    def canonical(self, request: RecordedRequest, rules: Rules | None = None) -> CanonicalRequest:
        """A stored request's canonical form, under this directory's matching rules, or under
        ``rules`` (another normaliser: would it make a miss match?)."""
        return canonicalize(Request.recorded(request), self.rules if rules is None else rules)

    def replace(self, entry: Entry) -> None:
        """Index a file just (re)written, first among its key's entries, in place of any
        earlier entry of the same file."""
        self.cache.forget(entry.file)
        self.entries.replace(entry)

    def drop(self, entry: Entry, error: CassetteError) -> None:
        """A file whose responses turned out broken when first used: skipped from now on,
        like the files found broken at start-up (a miss may then name it)."""
        self.cache.forget(entry.file)
        self.entries.remove(entry)
        self.bad.append(BadFile(entry.path, error.reason, entry.key))
        log.warning("cassette: skipping %s: %s", entry.file, error.reason)

    def __len__(self) -> int:
        return len(self.entries)

    def all_entries(self) -> Iterator[Entry]:
        """Every entry, in the walk's order (each saved row made into one)."""
        return iter(self.entries)

    def unused(self) -> list[str]:
        """The files of the recordings no request used, in no particular order."""
        return self.entries.unused_files()

    def find(self, canon: CanonicalRequest, test_dir: str | None = None) -> Found | None:
        """The recordings for a request: exact matches first, then host-agnostic ones; within
        those, the test's own cassette first, then the shared ones (other tests' cassettes
        never answer). Among host-agnostic ones, only those closest to the request's host:
        recorded for that host, else for the same provider family, else any (``hosts``).
        With a normaliser, exact beats normalised (``_by_original``)."""
        key = canon.key()
        found = self._found(key, key, canon, test_dir)
        if found is None:  # the host-agnostic key, worked out only now
            found = self._found(canon.any_host_key(), key, canon, test_dir)
        return found

    def _found(
        self, asked: str, key: str, canon: CanonicalRequest, test_dir: str | None
    ) -> Found | None:
        """The recordings under one of the request's keys (``asked``: ``key``, its exact one,
        or its host-agnostic one), as ``find`` says."""
        entries = self.entries.get(asked)  # made from their saved rows when first asked for
        if not entries:
            return None
        own = [e for e in entries if e.test_dir == test_dir] if test_dir is not None else []
        group, counter = (
            (own, f"{test_dir}|{asked}")
            if own
            else ([e for e in entries if e.test_dir is None], f"|{asked}")
        )
        if not group:
            return None
        if asked == key:
            found = Found(counter, group)
        else:
            closeness = [hosts.closeness(canon.host, e.origin, canon.path) for e in group]
            best = max(closeness)
            closest = [e for e, c in zip(group, closeness) if c == best]
            found = Found(
                f"{counter}|{canon.host}",
                closest,
                other_host=None if best == 2 else closest[0].origin,
            )
        if self.rules.normalize is None:  # one key per request: nothing more to compare
            return found
        exact = canon.exact_key() if asked == key else canon.exact_any_host_key()
        return self._by_original(found, exact, canon)

    def _by_original(self, found: Found, exact: str, canon: CanonicalRequest) -> Found:
        """Exact beats normalised. Recordings of this very request (``exact``, the key before
        the normaliser) answer before those that match only once both are normalised; where
        only those match and their originals differ, the nearest original answers (the others
        are named, for the log). A choice among originals counts its calls apart."""
        originals = {e.exact_key for e in found.entries}
        if len(originals) == 1:
            found.normalised = exact not in originals
            return found
        if exact in originals:
            same = [e for e in found.entries if e.exact_key == exact]
            return Found(f"{found.counter}|{exact}", same, found.other_host)
        chosen = self._nearest_original(found.entries, canon)
        return Found(
            f"{found.counter}|{chosen}",
            [e for e in found.entries if e.exact_key == chosen],
            found.other_host,
            normalised=True,
            passed_over=tuple(e for e in found.entries if e.exact_key != chosen),
        )

    def _nearest_original(self, entries: list[Entry], canon: CanonicalRequest) -> str:
        """The original (``exact_key``) whose values the normaliser hid are fewest and closest
        to the request's (``volatile.distance``); the first read among equals. Their requests
        are read again from their files: only such a choice pays for it."""
        normalizer = self.rules.normalize
        assert normalizer is not None
        before = replace(self.rules, normalize=None)
        asked = canon.original()
        first_of: dict[str, Entry] = {}
        for e in entries:
            first_of.setdefault(e.exact_key, e)
        best: tuple[tuple[int, float], str] | None = None
        for entry in first_of.values():
            try:
                recorded = self.canonical(entry.request, before)
            except CassetteError:  # unreadable now: never the nearest
                continue
            far = volatile.distance(volatile.hidden(asked, recorded, normalizer))
            if best is None or far < best[0]:
                best = (far, entry.exact_key)
        return best[1] if best is not None else entries[0].exact_key

    def nearest(self, canon: CanonicalRequest) -> tuple[Entry, list[str]] | None:
        """The recording of the same endpoint nearest to ``canon`` (``difference.closest``:
        same model, fewest differing places, closest values), among at most
        ``NEAREST_CANDIDATES`` of them, those of the same model first (requests are read
        again from their files: only a miss pays for this)."""
        candidates = self.entries.of_endpoint(canon.method, canon.path)
        if not candidates:
            return None
        model = canon.body.get("model") if isinstance(canon.body, dict) else None
        ordered = sorted(candidates, key=lambda e: e.model != model)[:NEAREST_CANDIDATES]
        return difference.closest(canon, ((e, self._canonical(e)) for e in ordered))

    def _canonical(self, entry: Entry) -> CanonicalRequest:
        try:
            return self.canonical(entry.request)
        except CassetteError:
            return CanonicalRequest(entry.method, "", entry.endpoint)

    def _salvage_key(self, path: Path) -> str | None:
        """The key of a broken file's request, if its request part is intact."""
        try:
            doc = orjson.loads(formats.read_bytes(path))
            probe = cassette.from_dict(
                {"version": 1, "request": doc["request"], "responses": [{"status": 200}]}
            )
            return self.canonical(probe.request).key()
        except Exception:  # noqa: BLE001 - anything unreadable: nothing to salvage
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
            rel = (
                bad.path.relative_to(self.root).parts[:-1]
                if bad.path.is_relative_to(self.root)
                else ()
            )
            if rel[1:] == segments or not rel:
                out.append(bad)
        return out


def _encoded_reads(results: list[Entry | BadFile]) -> bytes:
    """Entries by the fields a saved row holds, with their file; bad files by path, reason and
    key (three fields: an entry has more)."""
    return marshal.dumps(
        [
            (str(r.path), r.reason, r.key)
            if isinstance(r, BadFile)
            else (r.file, *[getattr(r, name) for name in SAVED_FIELDS])
            for r in results
        ]
    )
