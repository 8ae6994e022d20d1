"""A directory's entries: each readable file under its request's key, and by endpoint.

A start from the saved index (``index_cache``) keeps the saved rows as they are, by column,
and makes a file's ``Entry`` only when something first asks for its key (a request, a
recording of it), or all of them when something needs them all (the unused recordings, the
nearest recording of an endpoint, a conversation's followers): making 100,000 entries at start
cost 0.11 s of a start from the saved index, and a run reaches few of them. Every entry keeps
its place in the walk of the folder, so entries made late come out in the order reading every
file gives (the first read answers first).
"""

from __future__ import annotations

import sys
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from proxy_addon import formats
from proxy_addon.matching.canonical import CanonicalRequest
from proxy_addon.model import RecordedRequest, Recording
from proxy_addon.store.cache import RecordingCache
from proxy_addon.store.layout import model_of, origin_of, per_test_dir_of

PER_RUN = {"per_run": True}  # field metadata: state of this run, never saved with the index


@dataclass(slots=True, eq=False)
class Entry:
    """One readable file of the directory, as little as finding it needs (a directory may hold
    100,000 of them). Compared by identity: the same file read twice is two entries."""

    file: str
    key: str
    # the key before the cassette_normalize normaliser: the same string as ``key`` when there is
    # none, or when it changed nothing in this request (exact beats normalised, ``Index.find``)
    exact_key: str
    method: str
    endpoint: str  # the URL's path
    test_dir: str | None  # the test's own cassette it belongs to; None: shared
    origin: str  # the host it was recorded for (an any-host recording keeps it too)
    model: str | None
    test_id: str | None  # the test that recorded it (llama-stack's recordings name theirs)
    from_llama_stack: bool
    # what follows is the run's (the other fields are what ``index_cache`` saves, by name)
    cache: RecordingCache = field(repr=False, metadata=PER_RUN)
    held: Recording | None = field(default=None, metadata=PER_RUN)  # recorded in this run
    uses: int = field(default=0, metadata=PER_RUN)
    place: int = field(default=0, metadata=PER_RUN)  # in the walk; later for one recorded now

    @property
    def path(self) -> Path:
        return Path(self.file)

    @property
    def request(self) -> RecordedRequest:
        """The recorded request alone, from the file's head (``CassetteError`` if unreadable)."""
        return self.held.request if self.held is not None else formats.load_head(self.file).request

    @property
    def recording(self) -> Recording:
        """The whole recording (``CassetteError`` if its responses cannot be read)."""
        return self.held if self.held is not None else self.cache.load(self.file)


# The fields a saved index holds for each file, by name: those before the run's own, but the
# file (the row's own path). A saved row is made into Entry(file, *row, cache=..., place=...).
_RUNS_FROM = next(i for i, f in enumerate(fields(Entry)) if "per_run" in f.metadata)
SAVED_FIELDS = tuple(f.name for f in fields(Entry)[1:_RUNS_FROM])
if any("per_run" not in f.metadata for f in fields(Entry)[_RUNS_FROM:]):
    raise TypeError("Entry: the fields of this run come after those a saved index holds")
_KEY = SAVED_FIELDS.index("key")


def make_entry(
    file: str,
    request: RecordedRequest,
    canon: CanonicalRequest,
    test_id: str | None,
    root: str,
    cache: RecordingCache,
    from_llama_stack: bool,
    held: Recording | None = None,
) -> Entry:
    intern = sys.intern  # endpoints, hosts and models repeat across thousands of entries
    model = model_of(request)
    test_dir = per_test_dir_of(root, file)
    origin = canon.host or origin_of(request)  # the key leaves an any-host recording's out
    key = canon.key()
    exact_key = canon.exact_key()
    return Entry(
        file,
        key,
        key if exact_key == key else exact_key,
        intern(canon.method),
        intern(canon.path),
        intern(test_dir) if test_dir else None,
        intern(origin),
        intern(model) if model else None,
        test_id,
        from_llama_stack,
        cache,
        held,
    )


@dataclass(slots=True)
class SavedRows:
    """The saved index's rows as a load found them: by column (``SAVED_FIELDS``), each row
    standing for its file (at its place in the walk) or not (-1: the file changed or is gone)."""

    prefix: str  # the folder's path and separator, before each row's path
    paths: list[str]
    columns: list[list[Any]]
    places: array[int]


class Entries:
    """key -> entries, in the walk's order; endpoint -> entries; saved rows made on demand."""

    def __init__(self, cache: RecordingCache) -> None:
        self.cache = cache
        self._by_key: dict[str, list[Entry]] = {}
        # built when first asked for, then kept up to date (None: not built yet)
        self._by_endpoint: dict[tuple[str, str], list[Entry]] | None = None
        self._rows: SavedRows | None = None
        self._row_of: dict[str, int] = {}  # key -> its saved row (the last, if several)
        self._rows_of: dict[str, list[int]] = {}  # key -> its saved rows, if several
        self._waiting = 0  # saved rows standing for a file, not made into entries yet
        self._next_place = 0

    def add(self, entry: Entry, place: int) -> None:
        """Index an entry read from the folder at ``place`` in its walk, after the entries of
        the places before it."""
        entry.place = place
        self._next_place = max(self._next_place, place + 1)
        self._by_key.setdefault(entry.key, []).append(entry)
        if self._by_endpoint is not None:
            self._by_endpoint.setdefault((entry.method, entry.endpoint), []).append(entry)

    def restore(self, rows: SavedRows, read: list[Entry]) -> None:
        """The saved rows that stand for their files, with the entries read now (each with its
        place): the rows are made into entries when their key is first asked for."""
        keys = rows.columns[_KEY]
        self._rows = rows
        self._row_of = dict(zip(keys, range(len(keys))))
        if len(self._row_of) < len(keys):  # a key saved for several files
            several = {k for k, n in Counter(keys).items() if n > 1}
            for j, k in enumerate(keys):
                if k in several:
                    self._rows_of.setdefault(k, []).append(j)
        self._waiting = len(keys) - rows.places.count(-1)
        self._next_place = max(self._next_place, len(rows.places) and max(rows.places) + 1)
        for entry in read:  # after the saved rows of its key, in the walk's order
            self._next_place = max(self._next_place, entry.place + 1)
            made = self._by_key[entry.key] = self.get(entry.key)
            made.append(entry)
            made.sort(key=_place)

    def get(self, key: str) -> list[Entry]:
        """The entries of ``key`` (its saved rows made into entries now if they are not yet);
        the list itself, [] when none."""
        entries = self._by_key.get(key)
        if entries is not None:
            return entries
        rows = self._rows
        j = self._row_of.pop(key, None)
        if rows is None or j is None:
            return []
        places = rows.places
        standing = [i for i in self._rows_of.pop(key, [j]) if places[i] >= 0]
        if not standing:
            return []
        prefix, paths, columns, cache = rows.prefix, rows.paths, rows.columns, self.cache
        entries = self._by_key[key] = [
            Entry(  # type: ignore[misc]  # SAVED_FIELDS
                prefix + paths[i], *[c[i] for c in columns], cache=cache, place=places[i]
            )
            for i in standing
        ]
        self._waiting -= len(entries)  # (none waits once ``_by_endpoint`` is built)
        return entries

    def of_endpoint(self, method: str, endpoint: str) -> list[Entry]:
        """The entries of an endpoint in the walk's order (every saved row made first)."""
        if self._by_endpoint is None:
            by_endpoint: dict[tuple[str, str], list[Entry]] = {}
            for e in self:
                by_endpoint.setdefault((e.method, e.endpoint), []).append(e)
            self._by_endpoint = by_endpoint
        return self._by_endpoint.get((method, endpoint), [])

    def replace(self, entry: Entry) -> None:
        """Index a file just (re)written, first among its key's entries and last of its
        endpoint's, in place of any earlier entry of the same file."""
        entry.place = self._next_place
        self._next_place += 1
        current = self.get(entry.key)
        self._by_key[entry.key] = [entry, *(e for e in current if e.file != entry.file)]
        if self._by_endpoint is not None:
            endpoint = (entry.method, entry.endpoint)
            others = self._by_endpoint.get(endpoint, [])
            self._by_endpoint[endpoint] = [e for e in others if e.file != entry.file] + [entry]

    def remove(self, entry: Entry) -> None:
        self._by_key[entry.key] = [e for e in self.get(entry.key) if e is not entry]
        if self._by_endpoint is not None:
            endpoint = (entry.method, entry.endpoint)
            others = self._by_endpoint.get(endpoint, [])
            self._by_endpoint[endpoint] = [e for e in others if e is not entry]

    def made_for(self, file: str) -> Entry | None:
        """The entry made for ``file``, if one was (an entry that was served was)."""
        for entries in self._by_key.values():
            for e in entries:
                if e.file == file:
                    return e
        return None

    def unused_files(self) -> list[str]:
        """The files of the entries never used, the saved rows not made into entries yet among
        them (none was used), in no particular order: the summary lists them when the proxy
        stops, and making 100,000 entries for it took 0.4 s."""
        unused = [e.file for entries in self._by_key.values() for e in entries if e.uses == 0]
        rows, waiting = self._rows, self._row_of
        if rows is not None and waiting:
            keys, places, prefix, paths = rows.columns[_KEY], rows.places, rows.prefix, rows.paths
            unused += [
                prefix + paths[j] for j in range(len(keys)) if places[j] >= 0 and keys[j] in waiting
            ]
        return unused

    def ambiguous(self) -> bool:
        """Whether some key has several entries (then which one answers is a choice)."""
        places = self._rows.places if self._rows is not None else array("q")
        return any(len(v) > 1 for v in self._by_key.values()) or any(
            sum(places[i] >= 0 for i in rows) > 1 for rows in self._rows_of.values()
        )

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_key.values()) + self._waiting

    def __iter__(self) -> Iterator[Entry]:
        """Every entry, in the walk's order (every saved row made first)."""
        for key in list(self._row_of):
            self.get(key)
        made = [e for entries in self._by_key.values() for e in entries]
        made.sort(key=_place)
        return iter(made)


def _place(entry: Entry) -> int:
    return entry.place
