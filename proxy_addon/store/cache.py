"""Recordings read from disk when first replayed (or when the CLI validates a directory), the
most recently used kept in memory.

The index holds only what finding a recording needs; a directory of 100,000 recordings then
costs memory for the ones a run replays, not for all of them. A file is read once per run as
long as it stays within the budget; files larger than ``LARGE_FILE_BYTES`` are never kept, and
are read again each time they are replayed.
"""

from __future__ import annotations

from collections import OrderedDict

from proxy_addon import formats
from proxy_addon.model import Recording

LARGE_FILE_BYTES = 8 * 1024 * 1024  # never kept: read back from the file when replayed
BUDGET_BYTES = 128 * 1024 * 1024  # file bytes of the recordings kept at once


class RecordingCache:
    """path -> Recording, least recently used evicted first, bounded by the files' sizes."""

    def __init__(self, budget: int = BUDGET_BYTES, max_file_bytes: int | None = None) -> None:
        self.budget = budget
        self.max_file_bytes = max_file_bytes  # larger files are refused (``CassetteError``)
        self._kept: OrderedDict[str, tuple[Recording, int]] = OrderedDict()
        self._bytes = 0

    def load(self, file: str) -> Recording:
        """The recording in ``file``: kept, or read (``CassetteError`` if it cannot be)."""
        kept = self._kept.get(file)
        if kept is not None:
            self._kept.move_to_end(file)
            return kept[0]
        raw = formats.read_bytes(file, self.max_file_bytes)
        recording = formats.loads(raw, file)
        self.keep(file, recording, len(raw))
        return recording

    def keep(self, file: str, recording: Recording, size: int) -> None:
        """Keep a recording read from ``size`` bytes of ``file`` (unless it is large)."""
        self.forget(file)
        if size <= LARGE_FILE_BYTES:
            self._kept[file] = (recording, size)
            self._bytes += size
            while self._bytes > self.budget and len(self._kept) > 1:
                _, (_, dropped) = self._kept.popitem(last=False)
                self._bytes -= dropped

    def forget(self, file: str) -> None:
        """A file was rewritten or found broken: read it again next time."""
        kept = self._kept.pop(file, None)
        if kept is not None:
            self._bytes -= kept[1]
