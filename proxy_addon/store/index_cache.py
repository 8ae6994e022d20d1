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

log = logging.getLogger(__name__)

FORMAT_NAME = "llm-cassette-index"
VERSION = 1  # of the layout below; the fields saved are named in the file
# A file changed less than this before the scan is not saved: file times advance by clock
# ticks (a few ms on Linux); a file system that keeps whole seconds (FAT keeps two) gets longer.
RACY_NS = 100_000_000
RACY_COARSE_NS = 2_000_000_000
UNUSED_DAYS = 30  # a saved index not used for this long is deleted when another is written

Stamp = tuple[int, int, int, int]  # size, mtime_ns, ctime_ns, inode


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


def settled(st: os.stat_result, scan_ns: int) -> bool:
    """Whether a file was last changed long enough before ``scan_ns`` that any later change
    shows in its change time."""
    ctime = st.st_ctime_ns
    return ctime < scan_ns - (RACY_COARSE_NS if ctime % 1_000_000_000 == 0 else RACY_NS)


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


class IndexCache:
    """The saved index of one cassette folder: rows of named fields, by each file's path under
    the folder and its stamp."""

    def __init__(self, folder: Path, root: str, fields: Sequence[str], fingerprint: str) -> None:
        self.root = os.path.realpath(root)
        self.path = folder / f"index-{hashlib.sha256(self.root.encode()).hexdigest()[:32]}"
        self.fields = list(fields)
        self.fingerprint = fingerprint

    def load(
        self, files: list[str], skip: int, read: Callable[[int, str], object | None]
    ) -> tuple[Indexing, Saved, array[int]]:
        """Check ``files`` against the saved rows: a file whose stamp is the one saved keeps its
        row, the others are read (``read(place, file)``: an object with the fields as
        attributes, None for a bad file); then save the rows again if they changed. Returns
        the rows and, for each, the place in ``files`` of the file it stands for (-1: none).
        ``skip``: the length of the folder's path and separator before each file's path under
        it. A file costs no object that outlives its turn but what ``read`` keeps: 100,000
        rows of tuples fragmented 50 MB of memory."""
        scan_ns = time.time_ns()
        saved, state = self.read()
        old = saved or Saved.empty(len(self.fields))
        count, paths = len(old.paths), old.paths
        sizes, mtimes, ctimes, inodes = old.sizes, old.mtimes, old.ctimes, old.inodes
        places = array("q", [-1]) * count  # the file each saved row stands for, by its place
        # the files read now and settled, to be saved: where they are in ``fresh``, by place
        fresh_at = array("q", [-1]) * len(files)
        fresh = Saved.empty(0)
        read_now: list[object] = []  # their entries (``fresh``'s columns when saved)
        positions: dict[str, int] | None = None  # built only if the walk's order changed
        stat, nxt = os.stat, 0
        for i, file in enumerate(files):
            try:
                st = stat(file)
            except OSError:  # reading it says why
                read(i, file)
                continue
            rel = file[skip:]
            if nxt < count and paths[nxt] == rel:  # the order of the walk that saved them
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
                places[j] = i
                nxt = j + 1
                continue
            entry = read(i, file)
            if entry is not None and S_ISREG(st.st_mode) and settled(st, scan_ns):
                with contextlib.suppress(OverflowError):  # a time or inode beyond 64 bits
                    _append(fresh, stamp(st))
                    fresh_at[i] = len(read_now)
                    read_now.append(entry)
        fresh.columns = [[getattr(e, name) for e in read_now] for name in self.fields]
        served = count - places.count(-1)
        if read_now or served != count:
            where = array("q", [-1]) * len(files)  # the saved row each file keeps
            for j, i in enumerate(places):
                if i >= 0:
                    where[i] = j
            state += ", " + (self._save(files, skip, (old, where), (fresh, fresh_at)) or "saved")
        indexing = Indexing(0.0, len(files), served, len(files) - served, str(self.path), state)
        return indexing, old, places

    def _save(
        self,
        files: list[str],
        skip: int,
        *sources: tuple[Saved, array[int]],
    ) -> str | None:
        """The rows of this load, in the walk's order, each from the source that has it (the
        saved rows kept, the rows read now), by its position there."""
        new = Saved.empty(len(self.fields))
        for i, file in enumerate(files):
            for rows, at in sources:
                j = at[i]
                if j >= 0:
                    _append(new, rows.stamp(j))
                    for column, saved in zip(new.columns, rows.columns):
                        column.append(saved[j])
                    new.paths.append(file[skip:])
                    break
        return self.write(new)

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
        values = [_decoded(columns[name]) for name in self.fields]
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
            "columns": {name: _encoded(c) for name, c in zip(self.fields, saved.columns)},
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


def _encoded(column: list[Any]) -> Any:
    """A column as saved: as it is, or as a table of its distinct values and a reference per
    row where values repeat (endpoints, hosts, models), which also makes them shared objects
    again when read."""
    table: dict[Any, int] = {}
    refs = [table.setdefault(v, len(table)) for v in column]
    return {"table": list(table), "refs": refs} if len(table) * 2 < len(column) else column


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


def _decoded(column: Any) -> list[Any]:
    if isinstance(column, dict):
        table = column["table"]
        return [table[i] for i in column["refs"]]
    if not isinstance(column, list):
        raise TypeError("a column is not a list")
    return column


def _forget_unused(folder: Path, keep: Path) -> None:
    """Delete the saved indexes of folders not started over for ``UNUSED_DAYS`` (temporary
    folders of test runs leave theirs behind), and temporary files a killed start left."""
    limit = time.time() - UNUSED_DAYS * 86400
    with contextlib.suppress(OSError):
        for path in [*folder.glob("index-*"), *folder.glob(".index-*.tmp")]:
            if path != keep and path.stat().st_mtime < limit:
                path.unlink(missing_ok=True)
