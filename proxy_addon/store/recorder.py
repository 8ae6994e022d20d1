"""Recording into the directory: each request takes its place when it arrives, and its cassette
is rewritten with every whole response in that order as each one finishes.

Concurrent identical requests therefore keep the order they were made in, whatever order their
answers finish in. The rewrite scrubs the whole recording (``redact.scrub``) with the secrets of
every flow that joined it, which are kept here in memory only, so the file never holds them. A
response too large to keep in memory is written through and read back from the file when the
cassette is rewritten; that read happens on the writer's thread, in order after the earlier
write, so the proxy's event loop never waits for the disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from proxy_addon import formats
from proxy_addon.formats import cassette
from proxy_addon.matching.canonical import CanonicalRequest
from proxy_addon.model import RecordedRequest, RecordedResponse, Recording
from proxy_addon.redaction import redact
from proxy_addon.redaction.secret_rules import Secrets
from proxy_addon.store.cache import LARGE_FILE_BYTES
from proxy_addon.store.entries import Entry, make_entry
from proxy_addon.store.index import Index
from proxy_addon.store.layout import BY_TEST_DIR, layout_path, model_of
from proxy_addon.store.writer import Writer


@dataclass(slots=True)
class _OnDisk:
    """A recorded response too large to keep: its position in the cassette as last written."""

    position: int


@dataclass(slots=True)
class _Pending:
    """A request being recorded in this session: its responses in request order."""

    path: Path
    canonical: CanonicalRequest
    request: RecordedRequest  # as the live request was: scrubbed when the file is written
    secrets: Secrets  # the rules, and the values of every flow that joined (their keys)
    test_id: str | None
    test_dir: str | None  # the cassette the file belongs to (a refreshed shared one: None)
    slots: list[RecordedResponse | _OnDisk | None] = field(default_factory=list)
    llama_stack: dict[str, Any] | None = None  # kept from the file a refresh rewrites
    new: bool = False  # no recording had this file when it began


def _approx_bytes(resp: RecordedResponse) -> int:
    """Roughly how much a response weighs, to decide whether to keep it in memory."""
    if resp.stream is not None:
        return sum(len(ev.data) if isinstance(ev.data, str) else 256 for ev in resp.stream.events)
    if resp.websocket is not None:
        return sum(
            len(m.payload.value)
            if isinstance(m.payload.value, str)
            else len(orjson.dumps(m.payload.value))
            for m in resp.websocket.messages
        )
    if resp.body is not None and isinstance(resp.body.value, str):
        return len(resp.body.value)
    return 1024


class Recorder:
    """Places for requests being recorded, and the rewrites of their cassettes."""

    def __init__(self, index: Index, writer: Writer) -> None:
        self.index = index
        self.writer = writer
        self._pending: dict[str, _Pending] = {}
        self.created: set[str] = set()  # the files recordings created (none was indexed there)

    @staticmethod
    def _key(canon: CanonicalRequest, test_dir: str | None) -> str:
        return f"{test_dir or ''}|{canon.key()}"

    def is_recording(self, canon: CanonicalRequest, test_dir: str | None = None) -> bool:
        return self._key(canon, test_dir) in self._pending

    def begin(
        self,
        canon: CanonicalRequest,
        request: RecordedRequest,
        test_id: str | None = None,
        test_dir: str | None = None,
        into: Entry | None = None,
        secrets: Secrets | None = None,
    ) -> tuple[str, int]:
        """Reserve this request's place in its cassette, in arrival order, before the response
        is known. Returns (key, slot) for ``finish`` or ``abandon``.

        ``into``: a recording being refreshed. Its own file is rewritten with the new responses
        (whichever cassette it is in, the test's or a shared one), keeping its test id, whether
        it matches on any host, and what an imported llama-stack file needs for export.
        ``secrets``: the rules knowing this flow's own secrets (``exchange.own_secrets``)."""
        key = self._key(canon, test_dir)
        secrets = secrets if secrets is not None else self.index.rules.secrets
        pending = self._pending.get(key)
        if pending is not None:
            pending.secrets = pending.secrets.with_values(secrets.values)
        elif into is not None:
            old = into.recording
            request.any_host = old.request.any_host
            canon = canon.without_host() if request.any_host else canon
            pending = self._pending[key] = _Pending(
                into.path,
                canon,
                request,
                secrets,
                old.test_id,
                into.test_dir,
                llama_stack=old.llama_stack,
            )
        else:
            existing = [
                e
                for e in self.index.entries.get(canon.key())
                if e.test_dir == test_dir and not e.from_llama_stack
            ]
            root = self.index.root / BY_TEST_DIR / test_dir if test_dir else self.index.root
            path = (
                existing[0].path
                if existing
                else layout_path(root, canon, request.url, model_of(request), secrets=secrets)
            )
            pending = self._pending[key] = _Pending(
                path, canon, request, secrets, test_id, test_dir, new=not existing
            )
        pending.slots.append(None)
        return key, len(pending.slots) - 1

    def finish(self, key: str, slot: int, response: RecordedResponse) -> Path:
        """Store a response in its place and have the cassette rewritten with every whole
        response so far (responses still in flight for earlier places are left out until
        they arrive)."""
        pending = self._pending[key]
        if response.recorded_at is None:
            response.recorded_at = datetime.now(UTC).isoformat(timespec="seconds")
        pending.slots[slot] = response
        filled = [(k, r) for k, r in enumerate(pending.slots) if r is not None]
        # what the rewrite takes from memory, and what from the file as last written
        sources = [r.position if isinstance(r, _OnDisk) else r for _, r in filled]
        in_memory = [r for r in sources if isinstance(r, RecordedResponse)]
        keep = (
            len(in_memory) == len(sources)
            and sum(map(_approx_bytes, in_memory)) <= LARGE_FILE_BYTES
        )
        request, test_id, path = pending.request, pending.test_id, pending.path
        llama, secrets = pending.llama_stack, pending.secrets
        if pending.new:
            self.created.add(str(path))

        def rewrite(out: BinaryIO) -> None:  # on the writer's thread
            on_disk = formats.load(path).responses if len(in_memory) < len(sources) else []
            responses = [on_disk[s] if isinstance(s, int) else s for s in sources]
            recording = Recording(
                request=request, responses=responses, test_id=test_id, llama_stack=llama
            )
            cassette.write(redact.scrub(recording, secrets)[0], out)

        self.writer(path, rewrite)
        for position, (k, r) in enumerate(filled):
            if isinstance(r, _OnDisk):
                r.position = position
            elif not keep:
                pending.slots[k] = _OnDisk(position)  # drop the events from memory
        held = (
            Recording(request=request, responses=in_memory, test_id=test_id, llama_stack=llama)
            if keep
            else None
        )
        # indexed under the live request's key: the request is scrubbed only in the file
        entry = make_entry(
            str(path),
            request,
            pending.canonical,
            test_id,
            str(self.index.root),
            self.index.cache,
            False,
            held,
        )
        entry.uses = 1
        self.index.replace(entry)
        return path

    def path_of(self, key: str) -> Path | None:
        """The file a request being recorded goes to."""
        pending = self._pending.get(key)
        return pending.path if pending is not None else None

    def abandon(self, key: str, slot: int) -> None:
        """A response that will never be recorded (cut off, failed): its place stays empty."""
        pending = self._pending.get(key)
        if pending is not None and slot < len(pending.slots):
            pending.slots[slot] = None
