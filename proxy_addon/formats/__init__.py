"""Reading a cassette file in whichever format it is in: ours (``formats.cassette``) or
llama-stack's test-recorder files (``formats.llama_stack``), both into ``model.Recording``."""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import orjson

from proxy_addon.formats import cassette, llama_stack
from proxy_addon.model import CassetteError, RecordedRequest, Recording

# Where a file's responses begin, in the layout each writer uses (a top-level key, indented two
# spaces): the index reads what comes before, and the responses only when they are needed. One
# search finds either, stopping at the first.
_RESPONSES_START = re.compile(rb'\n  "(?:(responses": \[)|response": \{)')


@dataclass(frozen=True, slots=True)
class Head:
    """What indexing a file needs: its request, its test id and its format."""

    request: RecordedRequest
    test_id: str | None
    source: Literal["cassette", "llama-stack"]


def loads(raw: bytes, path: Path | str | None = None) -> Recording:
    """Parse a file's bytes in either format; raise ``CassetteError`` naming the file."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise CassetteError(path, f"not valid JSON ({e})") from None
    if llama_stack.is_llama_stack(doc):
        return llama_stack.read(doc, path)
    if isinstance(doc, dict) and not cassette.is_ours(doc):
        raise CassetteError(
            path,
            "not a cassette: no 'version' field, and not a llama-stack "
            "recording (no 'request' and 'response' objects)",
        )
    return cassette.from_dict(doc, path)


# The largest file any reader reads (cassette_max_file_mb's default; the proxy may set another):
# a file over it is refused by name, never read.
MAX_FILE_BYTES = 512 * 1024 * 1024
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def read_bytes(path: Path | str, max_bytes: int | None = MAX_FILE_BYTES) -> bytes:
    """A file's bytes; ``CassetteError`` when it cannot be read, is not a regular file, or is
    larger than ``max_bytes`` (None: no limit). The opened file itself is checked (``fstat``)
    before anything is read: opened without blocking, so a FIFO that took a file's place
    cannot hang the reader, and a device or a huge sparse file is refused by what it is. By
    the system calls themselves: a directory of 100,000 files is read in half the time a Python
    file object per file takes."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise CassetteError(path, "not a regular file (a FIFO, a device or a socket)")
            size = info.st_size
            if max_bytes is not None and size > max_bytes:
                raise CassetteError(
                    path,
                    f"too large ({size / 1048576:.1f} MB, the limit is "
                    f"{max_bytes / 1048576:.0f} MB: cassette_max_file_mb)",
                )
            data = os.read(fd, size + 1)  # one byte more: whether it grew since fstat
            if len(data) <= size:
                return data
            rest, total = [data], len(data)
            while chunk := os.read(fd, 1 << 20):
                rest.append(chunk)
                total += len(chunk)
                if max_bytes is not None and total > max_bytes:
                    raise CassetteError(path, "too large (it grew while it was read)")
            return b"".join(rest)
        finally:
            os.close(fd)
    except OSError as e:
        raise CassetteError(path, f"cannot read ({e.strerror})") from None


def load(path: Path | str) -> Recording:
    return loads(read_bytes(path), path)


def _head_doc(raw: bytes) -> tuple[dict, str] | None:
    """The file's top-level fields before its responses, parsed alone, with the format; None
    when the file is not laid out as the writers lay it out (then it is parsed whole)."""
    found = _RESPONSES_START.search(raw)
    if found is None or found.start() == 0:
        return None
    source = "cassette" if found.group(1) else "llama-stack"
    head = raw[: found.start()].rstrip().rstrip(b",") + b"\n}"
    try:
        doc = orjson.loads(head)
    except orjson.JSONDecodeError:
        return None
    return (doc, source) if isinstance(doc, dict) and "request" in doc else None


def head_of(raw: bytes, path: Path | str | None = None) -> Head:
    """A file's request, test id and format, its responses left unread where the layout allows
    (they are checked when first used); ``CassetteError`` naming the file otherwise."""
    found = _head_doc(raw)
    if found is None:
        rec = loads(raw, path)
        return Head(rec.request, rec.test_id, rec.source)
    doc, source = found
    test_id = doc.get("test_id") if isinstance(doc.get("test_id"), str) else None
    if source == "llama-stack" and "version" not in doc:
        return Head(llama_stack.read_request(doc, path), test_id, "llama-stack")
    request, test_id = cassette.request_from(doc, path)
    return Head(request, test_id, "cassette")


def load_head(path: Path | str) -> Head:
    return head_of(read_bytes(path), path)
