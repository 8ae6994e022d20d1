"""The index of a cassette folder saved between runs, so that a start over an unchanged folder
reads one file instead of every cassette.

A saved row stands for a file only while the file's stat is the same: its size, modification
and change times in nanoseconds, and its inode (an edit of the same size within the same second
still changes the change time, which no program can set back; two files swapped exchange their
inodes). Everything else that made the rows is in the fingerprint they are saved under: this
format's version, the source of this package (the code that reads files and makes keys), the
Python and orjson versions, the matching rules (ignore paths, secret rules with the values of
the environment's credential variables, normaliser) and the size limit. A saved index that does
not parse, fails its checksum, or was saved for another fingerprint, folder or list of fields is
ignored and rebuilt from the files: it is never trusted over them.

A file changed too recently before the scan is read and not saved (another edit of the same size
within the same clock tick would leave every stat field as it was), so it is read again next
time. The index is kept in the user's cache folder, never in the cassette folder (a read-only
checkout works, and nothing of it reaches a commit), one file per folder, named by a hash of
the folder's real path; written to a temporary file and renamed, so a start beside another
(xdist workers) reads a whole one or none. A JSON header line says what the file is and what it
was saved for; the rows follow in ``marshal``'s format, which Python reads twice as fast as
orjson reads JSON (43 ms for 100,000 rows), and only once their length and checksum are right.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import logging
import marshal
import os
import re
import sys
import time
import zlib
from array import array
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from stat import S_ISREG
from typing import Any

import orjson

from proxy_addon.store import fanout

log = logging.getLogger(__name__)

FORMAT_NAME = "llm-cassette-index"
VERSION = 2  # of the layout below; the fields saved are named in the file
# A file changed less than this before the scan is not saved: file times advance by clock
# ticks (a few ms on Linux); a file system that keeps whole seconds (FAT keeps two) gets longer.
RACY_NS = 100_000_000
RACY_COARSE_NS = 2_000_000_000
UNUSED_DAYS = 30  # a saved index not used for this long is deleted when another is written

Stamp = tuple[int, int, int, int]  # size, mtime_ns, ctime_ns, inode
# A file's check (``_Checked.rows``): the saved row it keeps, or one of these.
CHANGED = -1  # its stat is not its saved row's (or it has none): read, and saved once settled
UNSAVED = -2  # no stat fit to save (none, not a regular file, a part beyond 64 bits): read only
STATS_PER_PROCESS = 20_000  # fewer are checked in one process (0.06 s; a fork costs 5 ms)


@dataclasses.dataclass(slots=True)
class Indexing:
    """How a load of the folder went (the start-up line, the summary): its time, the files
    found, how many the saved index answered and how many were read."""

    seconds: float = 0.0
    files: int = 0
    from_cache: int = 0
    read: int = 0
    cache: str | None = None  # the saved index's file; None: none (turned off, the CLI)
    cache_state: str = "off"  # read, absent, ignored (why), unreadable; then saved, or why not


def stamp(st: os.stat_result) -> Stamp:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def settled(ctime_ns: int, scan_ns: int) -> bool:
    """Whether a file last changed at ``ctime_ns`` changed long enough before ``scan_ns`` that
    any later change shows in its change time."""
    return ctime_ns < scan_ns - (RACY_COARSE_NS if ctime_ns % 1_000_000_000 == 0 else RACY_NS)


def default_folder(environ: Mapping[str, str]) -> Path:
    """``$XDG_CACHE_HOME/llm-cassette-proxy/index``, else ``~/.cache/...``."""
    base = environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # the XDG rule: a relative value is ignored
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base, "llm-cassette-proxy", "index")


@functools.cache
def code_fingerprint() -> str:
    """A hash of this package's source (and of the Python and orjson that run it): any change to
    how a file is read or a key is made gives another one. The whole package, since a list of
    the modules that matter would be forgotten when one more starts to matter."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256(f"{sys.version}\0{orjson.__version__}\0".encode())
    sources = sorted(package.rglob("*.py"))
    if not sources:  # run from an archive: no source to tell versions apart, so never saved
        raise OSError(f"no source files under {package}")
    for source in sources:
        digest.update(source.relative_to(package).as_posix().encode() + b"\0")
        digest.update(source.read_bytes())
    return digest.hexdigest()


def _stable(value: Any) -> Any:
    """``value`` as JSON that is the same in every process: sets and mappings sorted, patterns
    by their text and flags, functions by name, objects by their public attributes (so an
    attribute added to the rules later is in the fingerprint without a change here)."""
    if value is None or isinstance(value, (str, int, float)):
        return value
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, re.Pattern):
        return ["re", value.pattern, value.flags]
    if isinstance(value, Mapping):
        return sorted(([_stable(k), _stable(v)] for k, v in value.items()), key=orjson.dumps)
    if isinstance(value, (set, frozenset)):
        return sorted((_stable(v) for v in value), key=orjson.dumps)
    if isinstance(value, (list, tuple)):
        return [_stable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        attrs = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    elif hasattr(value, "__dict__") and not callable(value):
        attrs = {k: v for k, v in vars(value).items() if not k.startswith("_")}
    elif callable(value):
        return ["code", value.__module__, value.__qualname__]
    else:
        raise TypeError(f"no stable form for {type(value).__qualname__}")
    return [type(value).__qualname__, {k: _stable(v) for k, v in sorted(attrs.items())}]


def fingerprint(rules: Any, max_file_bytes: int) -> str:
    """What the saved rows depend on beside the files themselves (see the module's docstring).
    ``OSError`` or ``TypeError`` when it cannot be known: then nothing is saved."""
    stable = [FORMAT_NAME, VERSION, code_fingerprint(), _stable(rules), max_file_bytes]
    return hashlib.sha256(orjson.dumps(stable)).hexdigest()


@dataclasses.dataclass(slots=True)
class Saved:
    """Rows as saved: by column, in the order of the walk that saved them. A stamp is four
    machine integers (``array``), not four Python ints: a start over 100,000 files then leaves
    nothing behind but its entries (a tuple a row cost 50 MB of fragmented memory)."""

    paths: list[str]
    sizes: array[int]  # 'q'
    mtimes: array[int]  # 'q'
    ctimes: array[int]  # 'q'
    inodes: array[int]  # 'Q'
    columns: list[list[Any]]  # one per field, in the order of ``IndexCache.fields``

    @classmethod
    def empty(cls, fields: int) -> Saved:
        return cls([], array("q"), array("q"), array("q"), array("Q"), [[] for _ in range(fields)])

    def stamp(self, i: int) -> Stamp:
        return (self.sizes[i], self.mtimes[i], self.ctimes[i], self.inodes[i])


@dataclasses.dataclass(slots=True)
class _Checked:
    """Files checked against the saved rows, by their place in the walk: the saved row each
    keeps (or ``CHANGED``, ``UNSAVED``), and the stamps of those that keep none, in order
    (zeros where there is none)."""

    rows: array[int]  # 'q'
    changed: Saved  # its stamps only

    @classmethod
    def empty(cls) -> _Checked:
        return cls(array("q"), Saved.empty(0))

    def arrays(self) -> tuple[array[int], ...]:
        c = self.changed
        return (self.rows, c.sizes, c.mtimes, c.ctimes, c.inodes)

    def to_bytes(self) -> bytes:
        return marshal.dumps([numbers.tobytes() for numbers in self.arrays()])

    @classmethod
    def from_bytes(cls, raw: bytes) -> _Checked:
        checked = cls.empty()
        for numbers, part in zip(checked.arrays(), marshal.loads(raw)):
            numbers.frombytes(part)
        return checked

    @classmethod
    def joined(cls, chunks: list[_Checked]) -> _Checked:
        whole = chunks[0]
        for chunk in chunks[1:]:
            for numbers, more in zip(whole.arrays(), chunk.arrays()):
                numbers.extend(more)
        return whole


def _checker(files: list[str], skip: int, old: Saved) -> Callable[[Sequence[int]], _Checked]:
    """The check of the files at some places of the walk: each one's stat, compared with the
    saved row of its path."""
    paths, count = old.paths, len(old.paths)
    sizes, mtimes, ctimes, inodes = old.sizes, old.mtimes, old.ctimes, old.inodes

    def check(places: Sequence[int]) -> _Checked:
        out = _Checked.empty()
        rows, changed = out.rows, out.changed
        positions: dict[str, int] | None = None  # built only if the walk's order changed
        stat = os.stat
        nxt = places[0] if places else 0  # where the walk that saved them had this file
        for i in places:
            file = files[i]
            try:
                st = stat(file)
            except OSError:  # reading it says why
                rows.append(UNSAVED)
                _append(changed, (0, 0, 0, 0))
                continue
            rel = file[skip:]
            if nxt < count and paths[nxt] == rel:
                j = nxt
            else:
                if positions is None:
                    positions = {path: n for n, path in enumerate(paths)}
                j = positions.get(rel, -1)
            if (
                j >= 0
                and sizes[j] == st.st_size
                and mtimes[j] == st.st_mtime_ns
                and ctimes[j] == st.st_ctime_ns
                and inodes[j] == st.st_ino
            ):
                rows.append(j)
                nxt = j + 1
                continue
            try:
                _append(changed, stamp(st))
                rows.append(CHANGED if S_ISREG(st.st_mode) else UNSAVED)
            except OverflowError:  # a time or inode beyond 64 bits: never saved
                _append(changed, (0, 0, 0, 0))
                rows.append(UNSAVED)
        return out

    return check


class IndexCache:
    """The saved index of one cassette folder: rows of named fields, by each file's path under
    the folder and its stamp."""

    def __init__(self, folder: Path, root: str, fields: Sequence[str], fingerprint: str) -> None:
        self.root = os.path.realpath(root)
        self.path = folder / f"index-{hashlib.sha256(self.root.encode()).hexdigest()[:32]}"
        self.fields = list(fields)
        self.fingerprint = fingerprint

    def load(
        self,
        files: list[str],
        skip: int,
        read: Callable[[list[str]], list[Any]],
        processes: int | None = None,
    ) -> tuple[Indexing, Saved, array[int], list[tuple[int, Any]]]:
        """Check ``files`` against the saved rows: a file whose stamp is the one saved keeps its
        row, the others are read (``read(files)``: for each, an object with the fields as
        attributes, None for a bad file); then save the rows again if they changed. Returns
        the rows; for each, the place in ``files`` of the file it stands for (-1: none); and
        the entries read now, each with its place. ``skip``: the length of the folder's path
        and separator before each file's path under it. The stats are taken and compared in
        ``processes`` processes (``fanout``). A file costs no object that outlives its turn
        but what ``read`` keeps: 100,000 rows of tuples fragmented 50 MB of memory."""
        scan_ns = time.time_ns()
        saved, state = self.read()
        old = saved or Saved.empty(len(self.fields))
        count = len(old.paths)
        checked = _Checked.joined(
            fanout.fan_out(
                range(len(files)),
                _checker(files, skip, old),
                STATS_PER_PROCESS,
                processes,
                encode=_Checked.to_bytes,
                decode=_Checked.from_bytes,
            )
        )
        places = array("q", [-1]) * count  # the file each saved row stands for, by its place
        changed = []
        for i, j in enumerate(checked.rows):
            if j >= 0:
                places[j] = i
            else:
                changed.append(i)
        # the files read now and settled, to be saved: where they are in ``fresh``, by place
        fresh_at = array("q", [-1]) * len(files)
        read_now: list[object] = []  # their entries (``fresh``'s columns)
        settled_at: list[int] = []  # where their stamps are among ``checked.changed``
        entries = read([files[i] for i in changed])
        for n, (i, entry) in enumerate(zip(changed, entries)):
            if (
                entry is not None
                and checked.rows[i] == CHANGED
                and settled(checked.changed.ctimes[n], scan_ns)
            ):
                fresh_at[i] = len(read_now)
                read_now.append(entry)
                settled_at.append(n)
        stamps = checked.changed
        sizes, mtimes, ctimes, inodes = (
            array(numbers.typecode, [numbers[n] for n in settled_at])
            for numbers in (stamps.sizes, stamps.mtimes, stamps.ctimes, stamps.inodes)
        )
        columns = [[getattr(e, name) for e in read_now] for name in self.fields]
        fresh = Saved([], sizes, mtimes, ctimes, inodes, columns)
        served = count - places.count(-1)
        if read_now or served != count:
            where = array("q", [-1]) * len(files)  # the saved row each file keeps
            for j, i in enumerate(places):
                if i >= 0:
                    where[i] = j
            state += ", " + (self._save(files, skip, (old, where), (fresh, fresh_at)) or "saved")
        indexing = Indexing(0.0, len(files), served, len(files) - served, str(self.path), state)
        return indexing, old, places, [(i, e) for i, e in zip(changed, entries) if e is not None]

    def _save(
        self,
        files: list[str],
        skip: int,
        *sources: tuple[Saved, array[int]],
    ) -> str | None:
        """The rows of this load, in the walk's order, each from the source that has it (the
        saved rows kept, the rows read now), by its position there. Column by column: row by
        row, 100,000 rows took 0.4 s."""
        picked: list[tuple[int, int]] = []  # (source, row) of each file that has a row
        paths: list[str] = []
        places = [at for _, at in sources]
        for i, file in enumerate(files):
            for s, at in enumerate(places):
                j = at[i]
                if j >= 0:
                    picked.append((s, j))
                    paths.append(file[skip:])
                    break
        tables = [rows for rows, _ in sources]

        def column(parts: list[Any]) -> list[Any]:
            return [parts[s][j] for s, j in picked]

        sizes, mtimes, ctimes, inodes = (
            array(code, column([getattr(t, name) for t in tables])) for name, code in _STAMPS
        )
        columns = [column([t.columns[c] for t in tables]) for c in range(len(self.fields))]
        return self.write(Saved(paths, sizes, mtimes, ctimes, inodes, columns))

    def read(self) -> tuple[Saved | None, str]:
        """The saved rows, or None; and what was found: ``read``, ``absent``, or why it was
        ignored."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None, "absent"
        except OSError as e:
            return None, f"unreadable ({e.strerror})"
        try:
            saved = self._saved(raw)
        except (ValueError, TypeError, KeyError, IndexError, EOFError) as e:
            log.info(
                "cassette: the saved index %s is ignored (%s): reading every file", self.path, e
            )
            return None, f"ignored ({e})"
        with contextlib.suppress(OSError):
            os.utime(self.path)  # used: kept by the clean-up of unused ones
        return saved, "read"

    def _saved(self, raw: bytes) -> Saved:
        head, newline, body = raw.partition(b"\n")
        header = orjson.loads(head)
        if not newline or not isinstance(header, dict):
            raise ValueError("no header")
        if header.get("format") != FORMAT_NAME or header.get("version") != VERSION:
            raise ValueError(f"format {header.get('format')} {header.get('version')}")
        if header.get("root") != self.root:
            raise ValueError("saved for another folder")
        if header.get("fingerprint") != self.fingerprint:
            raise ValueError("the rules or the code changed")
        if header.get("bytes") != len(body) or header.get("crc32") != zlib.crc32(body):
            raise ValueError("truncated or corrupt")
        doc = marshal.loads(body)
        paths, columns = doc["paths"], doc["columns"]
        if list(columns) != self.fields:
            raise ValueError("other fields")
        sizes, mtimes, ctimes, inodes = (_array(code, doc[name]) for name, code in _STAMPS)
        values = [columns[name] for name in self.fields]
        if not all(isinstance(c, list) for c in values):
            raise TypeError("a column is not a list")
        saved = Saved(paths, sizes, mtimes, ctimes, inodes, values)
        if any(len(c) != len(paths) for c in (sizes, mtimes, ctimes, inodes, *values)):
            raise ValueError("columns of other lengths")
        return saved

    def write(self, saved: Saved) -> str | None:
        """Save these rows; the reason when they could not be saved (the next start then reads
        every file again)."""
        doc = {
            "paths": saved.paths,
            **{name: getattr(saved, name).tobytes() for name, _ in _STAMPS},
            # a value shared by rows (an interned endpoint, host or model) is written once and
            # read back shared: ``marshal`` refers to an object it wrote before
            "columns": dict(zip(self.fields, saved.columns)),
        }
        body = marshal.dumps(doc)
        header = {
            "format": FORMAT_NAME,
            "version": VERSION,
            "root": self.root,
            "fingerprint": self.fingerprint,
            "files": len(saved.paths),
            "bytes": len(body),
            "crc32": zlib.crc32(body),
        }
        folder = self.path.parent
        temp = folder / f".{self.path.name}.{os.getpid()}.tmp"
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, orjson.dumps(header) + b"\n")
                view = memoryview(body)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(temp, self.path)
        except OSError as e:
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)
            log.info("cassette: could not save the index to %s: %s", self.path, e.strerror or e)
            return f"not saved ({e.strerror or e})"
        _forget_unused(folder, keep=self.path)
        return None


# A stamp's parts as saved: name and array type code (an inode is unsigned).
_STAMPS = (("sizes", "q"), ("mtimes", "q"), ("ctimes", "q"), ("inodes", "Q"))


def _append(rows: Saved, parts: Stamp) -> None:
    """A stamp added to ``rows``: all its parts, or none (``OverflowError``)."""
    arrays = (rows.sizes, rows.mtimes, rows.ctimes, rows.inodes)
    for n, (numbers, part) in enumerate(zip(arrays, parts)):
        try:
            numbers.append(part)
        except OverflowError:
            for added in arrays[:n]:
                added.pop()
            raise


def _array(code: str, raw: bytes) -> array[int]:
    numbers = array(code)
    numbers.frombytes(raw)
    return numbers


def _forget_unused(folder: Path, keep: Path) -> None:
    """Delete the saved indexes of folders not started over for ``UNUSED_DAYS`` (temporary
    folders of test runs leave theirs behind), and temporary files a killed start left."""
    limit = time.time() - UNUSED_DAYS * 86400
    with contextlib.suppress(OSError):
        for path in [*folder.glob("index-*"), *folder.glob(".index-*.tmp")]:
            if path != keep and path.stat().st_mtime < limit:
                path.unlink(missing_ok=True)
