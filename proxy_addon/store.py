"""The cassette directory: what is on disk, how it is looked up, and how it is written.

The whole directory is indexed once at start-up (key -> recordings), so a lookup is a dict
access, never a scan. Files that cannot be read are skipped and remembered with the reason, so
the proxy keeps serving the others and a miss can say that a broken file might have matched.
Writes go to a temporary file in the target directory and are renamed into place: a crash
leaves either the old cassette or the new one, never half of one.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import logging
import os
import queue
import re
import tempfile
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Sequence
from urllib.parse import urlsplit

import orjson

from proxy_addon import cassette, hosts, matching
from proxy_addon.cassette import CassetteError, RecordedRequest, RecordedResponse, Recording
from proxy_addon.conversation import (
    LookupContext,
    assistant_messages,
    message_signatures,
    transcript_signature,
    write_answer,
)
from proxy_addon.matching import CanonicalRequest
from proxy_addon.reassemble import Transcript, reassemble

log = logging.getLogger(__name__)

IgnorePaths = Sequence[tuple[str | int, ...]]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


# Recordings in files larger than this are not kept in memory: read again when replayed.
KEEP_IN_MEMORY_BYTES = 8 * 1024 * 1024
# Per-test cassettes live in <cassette_dir>/by-test/<scope>/; everything else is shared.
SCOPES_DIR = "by-test"


_HASHED = re.compile(r"-[0-9a-f]{12}$")


def _unflatten(flat: str) -> str:
    """The pytest node id a readable name stands for: the parts up to the first ``*.py`` are
    the file's path, the others its ``::`` parts (the inverse of the flattening below)."""
    parts = flat.split("__")
    for i, part in enumerate(parts):
        if part.endswith(".py"):
            return "/".join(parts[: i + 1]) + "".join("::" + p for p in parts[i + 1:])
    return "::".join(parts)


def scope_name(name: str) -> str:
    """A one-directory name for a test's cassette, readable from its pytest node id:
    ``tests/test_app.py::test_joke`` -> ``tests__test_app.py__test_joke``.

    Injective: the readable form is kept as it is only when it reads back as ``name`` exactly
    (``_unflatten``); otherwise (``test[hello, world]``, ``[é]``, a long id) it ends with a
    hash of ``name``, and no name kept as it is ends like one."""
    flat = name.replace("::", "__").replace("/", "__")
    cleaned = safe_segment(flat, 100)
    if cleaned == flat and _unflatten(flat) == name and not _HASHED.search(flat):
        return cleaned
    return f"{cleaned}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"


def scope_of(root: Path, path: Path) -> str | None:
    """The test scope a cassette file belongs to, or None for a shared one."""
    prefix = os.path.join(root, SCOPES_DIR, "")
    text = os.fspath(path)
    if not text.startswith(prefix):
        return None
    rest = text[len(prefix):].split(os.sep)
    return rest[0] if len(rest) > 2 else None


@dataclass(slots=True)
class Entry:
    """One readable file of the directory, indexed under its request's key."""

    path: Path
    held: Recording | None  # None: too large to keep, read from ``path`` when needed
    canonical: CanonicalRequest
    uses: int = 0
    scope: str | None = None  # the test's cassette it belongs to; None: shared
    origin: str = ""  # the host it was recorded for (an any-host recording keeps it too)
    _answer: str | None | bool = False  # signature of the first answer, computed on demand
    _transcript: Transcript | None = None

    def transcript(self) -> Transcript:
        """The first answer as the user saw it, reassembled once."""
        if self._transcript is None:
            self._transcript = reassemble(self.recording.responses[0])
        return self._transcript

    @property
    def recording(self) -> Recording:
        return self.held if self.held is not None else cassette.load(self.path)

    def answer(self) -> str | None:
        if self._answer is False:
            self._answer = transcript_signature(self.transcript())
        return self._answer  # type: ignore[return-value]


@dataclass(slots=True)
class BadFile:
    path: Path
    reason: str
    key: str | None = None  # the request's key, when the request part could still be read


@dataclass(slots=True)
class Hit:
    entry: Entry
    response: RecordedResponse
    index: int  # which of the recorded responses (0-based)
    other_host: str | None = None  # answered from a recording made for this other host


@dataclass(slots=True)
class Found:
    """The recordings that answer a request, all equally close to it."""

    counter: str  # the key its calls are counted under (the N-th call, the N-th response)
    entries: list[Entry]
    other_host: str | None = None  # they were recorded for another host than the request's


@dataclass(slots=True)
class _OnDisk:
    """A recorded response too large to keep: its position in the cassette as last written."""

    position: int


@dataclass(slots=True)
class _Pending:
    """A key being recorded in this session: its responses in request order."""

    path: Path
    request: RecordedRequest
    test_id: str | None
    index_key: str  # the request's key in the index
    scope: str | None = None
    slots: list[RecordedResponse | _OnDisk | None] = field(default_factory=list)


def safe_segment(text: str, limit: int = 64) -> str:
    """A file-name-safe version of ``text``: never empty, never ``.``/``..``, no separators."""
    cleaned = _UNSAFE.sub("_", text).strip("._")[:limit]
    return cleaned or "_"


def layout_path(root: Path, canon: CanonicalRequest, url: str, model: str | None,
                tag: str | None = None) -> Path:
    """Where a new cassette goes: ``<host>/<path...>/<model or method>-<key12>[-<tag>].json``.

    Browsable by provider and endpoint in a review; every segment is sanitised, and the result
    is checked to stay inside ``root`` whatever the request said.
    """
    parts = urlsplit(url)
    host = safe_segment(matching.normalise_host(parts.scheme, parts.hostname or "unknown-host",
                                                parts.port))
    segments = [safe_segment(s) for s in canon.path.split("/") if s and s not in (".", "..")][:8]
    stem = safe_segment(model or canon.method.lower(), 48)
    name = f"{stem}-{canon.key()[:12]}" + (f"-{safe_segment(tag, 16)}" if tag else "")
    target = root.joinpath(host, *segments, f"{name}.json")
    resolved_root = root.resolve()
    if not target.resolve().is_relative_to(resolved_root):  # defence in depth
        raise ValueError(f"refusing to write outside {root}: {target}")
    return target


def _approx_bytes(resp: RecordedResponse) -> int:
    """Roughly how much a response weighs, to decide whether to keep it in memory."""
    if resp.stream is not None:
        return sum(len(ev.data) if isinstance(ev.data, str) else 256 for ev in resp.stream.events)
    if resp.body is not None and isinstance(resp.body.value, str):
        return len(resp.body.value)
    return 1024


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def atomic_write(path: Path, data: bytes | Callable[[BinaryIO], None]) -> None:
    """Write ``data`` (bytes, or a function writing to a file) to ``path`` so that readers see
    the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


Writer = Callable[[Path, Callable[[BinaryIO], None]], None]


def write_now(path: Path, write: Callable[[BinaryIO], None]) -> None:
    atomic_write(path, write)


class BackgroundWriter:
    """Writes cassettes on one thread, in the order they were finished, so a client never waits
    for the disk: its stream ends when the provider's does. ``on_done(path, error)`` reports
    each write. Call ``close`` before exit to drain the queue."""

    def __init__(self, on_done: Callable[[Path, OSError | None], None]) -> None:
        self._on_done = on_done
        self._queue: queue.Queue[tuple[Path, Callable[[BinaryIO], None]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="cassette-writer", daemon=True)

    def __call__(self, path: Path, write: Callable[[BinaryIO], None]) -> None:
        if not self._thread.is_alive():  # started on the first write: replay never needs it
            self._thread.start()
        self._queue.put((path, write))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                path, write = item
                try:
                    atomic_write(path, write)
                except Exception as e:  # never let one bad write stop the writer
                    self._on_done(path, e if isinstance(e, OSError) else OSError(str(e)))
                else:
                    self._on_done(path, None)
            finally:
                self._queue.task_done()

    def flush(self) -> None:
        self._queue.join()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


def iter_cassette_files(root: Path) -> Iterator[Path]:
    """Every ``*.json`` under ``root``, skipping hidden files and directories (temp files)."""
    if not root.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith(".json") and not name.startswith("."):
                yield Path(dirpath, name)


def origin_of(request: RecordedRequest) -> str:
    """The host a request was recorded for, normalised as matching compares hosts."""
    parts = urlsplit(request.url)
    return matching.normalise_host(parts.scheme, parts.hostname or "", parts.port)


def model_of(request: RecordedRequest) -> str | None:
    if request.body is not None and request.body.kind == "json" and isinstance(
            request.body.value, dict):
        model = request.body.value.get("model")
        return model if isinstance(model, str) else None
    return None


class CassetteStore:
    """Index of a cassette directory, with sequential replay and atomic recording."""

    def __init__(self, root: Path, ignore: IgnorePaths = (),
                 max_file_bytes: int = 512 * 1024 * 1024, writer: Writer = write_now) -> None:
        self.root = Path(root)
        self.writer = writer
        self.ignore = tuple(ignore)
        self.max_file_bytes = max_file_bytes
        self.entries: dict[str, list[Entry]] = {}
        self.by_endpoint: dict[tuple[str, str], list[Entry]] = defaultdict(list)
        self.bad: list[BadFile] = []
        self._served: dict[str, int] = defaultdict(int)
        self._pending: dict[str, _Pending] = {}
        # conversation coherence, used only where one request has several recordings
        self._followed: dict[str, list[Entry]] | None = None
        self._depths: dict[int, int] = {}
        self._served_answers: dict[str, str] = {}
        # served answer -> the other answers recorded for the same request
        self._alternatives: dict[str, list[Transcript]] = {}
        self._connection_tests: dict[str, list[str]] = defaultdict(list)
        self._ambiguous = False
        self._merged: dict[str, RecordedResponse] = {}  # model lists of one host, united

    # -- reading --------------------------------------------------------------------------

    def load(self) -> None:
        """Index every readable file; remember (and log) the others."""
        self.entries.clear()
        self.by_endpoint.clear()
        self.bad.clear()
        self._followed = None
        for path in iter_cassette_files(self.root):
            size = _size(path)
            if size > self.max_file_bytes:
                reason = (f"too large ({size / 1048576:.1f} MB, the limit is "
                          f"{self.max_file_bytes / 1048576:.0f} MB: cassette_max_file_mb)")
                self.bad.append(BadFile(path, reason))
                log.warning("cassette: skipping %s: %s", path, reason)
                continue
            try:
                rec = cassette.load(path)
            except CassetteError as e:
                self.bad.append(BadFile(path, e.reason, self._salvage_key(path)))
                log.warning("cassette: skipping %s: %s", path, e.reason)
                continue
            held = rec if size <= KEEP_IN_MEMORY_BYTES else None
            self._index(Entry(path, held, rec.request.canonical(self.ignore),
                              scope=scope_of(self.root, path), origin=origin_of(rec.request)))
        self._ambiguous = any(len(v) > 1 for v in self.entries.values())

    def _index(self, entry: Entry) -> None:
        self.entries.setdefault(entry.canonical.key(), []).append(entry)
        self.by_endpoint[(entry.canonical.method, entry.canonical.path)].append(entry)

    def __len__(self) -> int:
        return sum(len(v) for v in self.entries.values())

    def all_entries(self) -> Iterator[Entry]:
        for entries in self.entries.values():
            yield from entries

    def find(self, canon: CanonicalRequest, scope: str | None = None) -> Found | None:
        """The recordings for a request: exact matches first, then host-agnostic ones; within
        those, the test's own cassette first, then the shared ones (other tests' cassettes
        never answer). Among host-agnostic ones, only those closest to the request's host:
        recorded for that host, else for the same provider family, else any (``hosts``)."""
        for key in (canon.key(), canon.any_host_key()):
            entries = self.entries.get(key)
            if not entries:
                continue
            own = [e for e in entries if e.scope == scope] if scope is not None else []
            group, counter = (own, f"{scope}|{key}") if own else \
                ([e for e in entries if e.scope is None], f"|{key}")
            if not group:
                continue
            if key == canon.key():
                return Found(counter, group)
            closeness = [hosts.closeness(canon.host, e.origin, canon.path) for e in group]
            best = max(closeness)
            closest = [e for e, c in zip(group, closeness) if c == best]
            if best == 2:
                return Found(f"{counter}|{canon.host}", closest)
            return Found(f"{counter}|{canon.host}", closest, other_host=closest[0].origin)
        return None

    def lookup(self, canon: CanonicalRequest, ctx: LookupContext | None = None) -> Hit | None:
        """The next response for this request: the N-th call gets the N-th recorded response,
        and past the end the last one repeats. Where several files recorded this request
        (llama-stack tests sharing a first turn), the one that keeps the conversation
        coherent is chosen (see ``choose``)."""
        ctx = ctx or LookupContext()
        found = self.find(canon, ctx.scope)
        variants = self._variants(canon, ctx.scope) if self._alternatives else []
        if found is None and variants:
            found = max(variants, key=lambda f: max(self.depth(e) for e in f.entries))
        if found is None:
            return None
        entries = found.entries
        if len(entries) > 1 and found.other_host is None and \
                hosts.is_model_list(canon.method, canon.path):
            return self._model_list(found)
        entry = entries[0] if len(entries) == 1 else self.choose(entries, canon, ctx)
        n = self._served[found.counter]
        self._served[found.counter] = n + 1
        entry.uses += 1
        index = min(n, len(entry.recording.responses) - 1)
        if self._ambiguous:
            self._remember(entry, ctx, entries + [e for f in variants for e in f.entries])
        other_host = entry.origin if found.other_host is not None else None
        return Hit(entry, entry.recording.responses[index], index, other_host)

    def _model_list(self, found: Found) -> Hit:
        """One host's model list recorded several times (each time with the models it had
        then): answered with all of them, built once."""
        merged = self._merged.get(found.counter)
        if merged is None:
            answers = [e.recording.responses[-1] for e in found.entries]
            bodies = [r.body.value for r in answers if r.body is not None and r.body.kind == "json"]
            first = answers[0]
            merged = RecordedResponse(first.status, first.headers, recorded_at=first.recorded_at,
                                      body=cassette.Body("json", hosts.union_of_model_lists(bodies))
                                      if bodies else first.body)
            self._merged[found.counter] = merged
        for e in found.entries:
            e.uses += 1
        return Hit(found.entries[0], merged, 0)

    def _variants(self, canon: CanonicalRequest,
                  scope: str | None) -> list[Found]:
        """This request as other recorded conversations made it: with each answer we chose
        among several replaced by one of the others.

        A first turn recorded by several tests gets one of their answers; the client's next
        turn embeds that answer, while its own test recorded that turn after another one. Any
        of them was right for the first turn, so the next turn as recorded after another answer
        is a coherent reply, and the answers of those variants are in turn alternatives of each
        other for the turns after. At most 32 combinations are tried.
        """
        slots = [(index, self._alternatives[sig]) for index, sig in assistant_messages(canon.body)
                 if sig is not None and sig in self._alternatives]
        if not slots:
            return []
        fits: list[Found] = []
        for combination in itertools.islice(itertools.product(*(alts for _, alts in slots)), 32):
            body = copy.deepcopy(canon.body)
            for (index, _), answer in zip(slots, combination, strict=True):
                write_answer(body, index, answer)
            found = self.find(dataclasses.replace(canon, body=body), scope)
            if found is not None:
                fits.append(found)
        return fits

    def choose(self, entries: list[Entry], canon: CanonicalRequest,
               ctx: LookupContext) -> Entry:
        """Among recordings of the same request, prefer, in this order: the test named by the
        client; the test whose answers this conversation already carries; the answer followed
        by the longest recorded conversation (a client whose own conversation is shorter
        still finds its next turn among the ``_variants``); a test already served on this
        connection."""
        conversation = {self._served_answers[s] for s in message_signatures(canon.body)
                        if s in self._served_answers}
        connection = set(self._connection_tests.get(ctx.connection or "", ()))

        def score(e: Entry) -> tuple[bool, bool, int, bool]:
            tid = e.recording.test_id
            return (ctx.test_id is not None and tid == ctx.test_id, tid in conversation,
                    self.depth(e), tid in connection)

        return max(entries, key=score)

    def followed_answers(self) -> set[str]:
        """Signatures of every answer that some recorded request carries as an earlier turn."""
        return set(self._followers_index())

    def _followers_index(self) -> dict[str, list[Entry]]:
        """Answer signature -> the recordings whose request carries it as its last answer."""
        if self._followed is None:
            index: dict[str, list[Entry]] = defaultdict(list)
            for e in self.all_entries():
                if e.recording.request.body is not None:
                    sigs = message_signatures(e.recording.request.body.value)
                    if sigs:
                        index[sigs[-1]].append(e)
            self._followed = index
            self._depths = {}
        return self._followed

    def depth(self, entry: Entry, _seen: frozenset[int] = frozenset()) -> int:
        """How many recorded turns follow this recording's answer (0: none)."""
        key = id(entry)
        if key in self._depths:
            return self._depths[key]
        sig = entry.answer()
        followers = self._followers_index().get(sig, []) if sig is not None else []
        seen = _seen | {key}
        result = max((1 + self.depth(f, seen) for f in followers if id(f) not in seen),
                     default=0)
        self._depths[key] = result
        return result

    def _remember(self, entry: Entry, ctx: LookupContext, entries: list[Entry]) -> None:
        """Note what was served: its answer's alternatives (the answers of the other
        recordings of this turn), and its test for the conversation and the connection."""
        sig = entry.answer()
        others = {e.answer(): e for e in entries if e.answer() not in (None, sig)}
        if sig is not None and others:
            self._alternatives[sig] = [e.transcript() for e in others.values()]
        tid = entry.recording.test_id
        if tid is None:
            return
        if sig is not None:
            self._served_answers[sig] = tid
        if ctx.connection is not None:
            self._connection_tests[ctx.connection].append(tid)

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
            req = doc["request"]
            probe = cassette.from_dict({"version": 1, "request": req,
                                        "responses": [{"status": 200}]})
            return probe.request.canonical(self.ignore).key()
        except Exception:  # anything unreadable: nothing to salvage
            return None

    def bad_files_for(self, canon: CanonicalRequest) -> list[BadFile]:
        """Unreadable files that would have matched this request (their request part says so),
        or that sit where this endpoint's cassettes go."""
        keys = {canon.key(), canon.any_host_key()}
        exact = [b for b in self.bad if b.key in keys]
        if exact:
            return exact
        segments = [safe_segment(s) for s in canon.path.split("/") if s]
        out = []
        for bad in self.bad:
            if bad.key is not None:
                continue
            rel = bad.path.relative_to(self.root).parts[:-1] if bad.path.is_relative_to(
                self.root) else ()
            if rel[1:] == tuple(segments) or not rel:
                out.append(bad)
        return out

    def unused(self) -> list[Entry]:
        return [e for e in self.all_entries() if e.uses == 0]

    # -- recording ------------------------------------------------------------------------

    def begin_recording(self, canon: CanonicalRequest, request: RecordedRequest,
                        test_id: str | None = None,
                        scope: str | None = None) -> tuple[str, int]:
        """Reserve this request's place in its cassette, in arrival order, before the response
        is known, so concurrent identical requests keep the order they were made in."""
        index_key = canon.key()
        key = f"{scope or ''}|{index_key}"
        pending = self._pending.get(key)
        if pending is None:
            existing = [e for e in self.entries.get(index_key, [])
                        if e.scope == scope and e.recording.source == "cassette"]
            root = self.root / SCOPES_DIR / scope if scope else self.root
            path = existing[0].path if existing else layout_path(
                root, canon, request.url, model_of(request))
            pending = self._pending[key] = _Pending(path, request, test_id, index_key, scope)
        pending.slots.append(None)
        return key, len(pending.slots) - 1

    def is_recording(self, canon: CanonicalRequest, scope: str | None = None) -> bool:
        return f"{scope or ''}|{canon.key()}" in self._pending

    def finish_recording(self, key: str, slot: int, response: RecordedResponse) -> Path:
        """Store a response in its place and rewrite the cassette atomically.

        Responses still in flight for earlier slots are left out until they arrive; the file
        on disk always holds whole responses only. A response too large to keep in memory is
        written through and read back from the file if the cassette is rewritten.
        """
        pending = self._pending[key]
        if response.recorded_at is None:
            response.recorded_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        pending.slots[slot] = response
        filled = [(k, r) for k, r in enumerate(pending.slots) if r is not None]
        on_disk = None
        if any(isinstance(r, _OnDisk) for _, r in filled):
            flush = getattr(self.writer, "flush", None)
            if flush is not None:
                flush()  # the earlier write must be on disk before it is read back
            on_disk = cassette.load(pending.path).responses
        responses = [on_disk[r.position] if isinstance(r, _OnDisk) else r  # type: ignore[index]
                     for _, r in filled]
        rec = Recording(request=pending.request, responses=responses, test_id=pending.test_id)
        self.writer(pending.path, lambda f: cassette.write(rec, f))
        held = rec if sum(map(_approx_bytes, responses)) <= KEEP_IN_MEMORY_BYTES else None
        for position, (k, r) in enumerate(filled):
            if isinstance(r, _OnDisk):
                r.position = position
            elif held is None:
                pending.slots[k] = _OnDisk(position)  # drop the events from memory
        entry = Entry(pending.path, held, pending.request.canonical(self.ignore), uses=1,
                      scope=pending.scope, origin=origin_of(pending.request))
        self._replace_entry(pending.index_key, entry)
        return pending.path

    def abandon_recording(self, key: str, slot: int) -> None:
        """A response that will never be recorded (cut off, failed): its place stays empty."""
        pending = self._pending.get(key)
        if pending is not None and slot < len(pending.slots):
            pending.slots[slot] = None

    def _replace_entry(self, key: str, entry: Entry) -> None:
        old = self.entries.get(key, [])
        kept = [e for e in old if e.path != entry.path]
        self.entries[key] = [entry, *kept]
        ep = (entry.canonical.method, entry.canonical.path)
        self.by_endpoint[ep] = [e for e in self.by_endpoint[ep] if e.path != entry.path] + [entry]
