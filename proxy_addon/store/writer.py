"""Writing cassettes: atomically, and off the proxy's event loop.

A write goes to a temporary file in the target directory, is ``fsync``ed and renamed into
place: a crash leaves the old file or the new one, never half of one. The proxy hands its
writes to a ``BackgroundWriter`` so a client never waits for the disk.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

WriteJob = Callable[[BinaryIO], None]  # writes a cassette's bytes to an open file
Writer = Callable[[Path, WriteJob], None]  # runs a job for a path (now, or later in order)


def atomic_write(path: Path, data: bytes | WriteJob) -> None:
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
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class BackgroundWriter:
    """Writes cassettes on one thread, in the order they were submitted, so a client never
    waits for the disk: its stream ends when the provider's does. A job may read the file it
    replaces (earlier writes are done by then). ``on_done(path, error)`` is called on the
    writer thread after each write. After ``close`` a write is done at once in the caller."""

    def __init__(self, on_done: Callable[[Path, Exception | None], None]) -> None:
        self._on_done = on_done
        self._queue: queue.Queue[tuple[Path, WriteJob] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="cassette-writer", daemon=True)
        self._lock = threading.Lock()
        self._closed = False

    def __call__(self, path: Path, job: WriteJob) -> None:
        with self._lock:
            if not self._closed:
                if not self._thread.is_alive():  # started on the first write: replay needs none
                    self._thread.start()
                self._queue.put((path, job))
                return
        self._write(path, job)  # after close (a flow finishing during shutdown): write now

    def _write(self, path: Path, job: WriteJob) -> None:
        try:
            atomic_write(path, job)
        except Exception as e:  # noqa: BLE001 - one bad write must not stop the writer
            self._on_done(path, e)
        else:
            self._on_done(path, None)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            self._write(*item)

    def close(self) -> None:
        """Write everything submitted so far, then stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            started = self._thread.is_alive()
        if started:
            self._queue.put(None)
            self._thread.join()
