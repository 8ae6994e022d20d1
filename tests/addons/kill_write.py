"""Test-only addon: SIGKILL the proxy in the middle of writing a cassette, at a chosen point.

Loaded after the cassette addon with ``-s``; ``--set kill_write=POINT:N`` kills the process
during its N-th cassette write (a ``.json`` file under ``cassette_dir``), at POINT:

- ``mid-bytes``: once half of the cassette's bytes have been written, wherever they are being
  written (the point is in the format's writer, not in the atomic-write machinery, so a writer
  that wrote in place would leave the half file where the cassette goes);
- ``before-fsync``: the bytes are all written, not yet ``fsync``ed;
- ``before-rename``: written and ``fsync``ed, not yet renamed into place.

What the kill leaves on disk is then checked by the test with a reader of its own.
"""

import io
import os
import signal
import threading

from mitmproxy import ctx

from proxy_addon.formats import cassette

_lock = threading.Lock()
_writes = 0
_armed: tuple[str, int] | None = None


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _counting(point: str):  # type: ignore[no-untyped-def]
    """Whether this cassette write is the one to kill, at ``point``."""
    global _writes
    if _armed is None or _armed[0] != point:
        return False
    with _lock:
        _writes += 1
        return _writes == _armed[1]


_format_write = cassette.write


def _write_then_die_half_way(rec, out) -> None:  # type: ignore[no-untyped-def]
    if not _counting("mid-bytes"):
        _format_write(rec, out)
        return
    whole = io.BytesIO()
    _format_write(rec, whole)
    data = whole.getvalue()
    out.write(data[: len(data) // 2])
    out.flush()
    os.fsync(out.fileno())  # the half is on disk, wherever it was being written
    _die()


_fsync = os.fsync
_replace = os.replace


def _fsync_or_die(fd: int) -> None:
    if _counting("before-fsync"):
        _die()
    _fsync(fd)


def _replace_or_die(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
    if str(dst).endswith(".json") and _counting("before-rename"):
        _die()
    return _replace(src, dst, *args, **kwargs)


class KillWrite:
    def load(self, loader) -> None:  # type: ignore[no-untyped-def]
        loader.add_option(
            "kill_write", str, "", "POINT:N: SIGKILL at POINT of the N-th cassette write."
        )

    def configure(self, updated: set[str]) -> None:
        global _armed
        if "kill_write" in updated and ctx.options.kill_write:
            point, n = ctx.options.kill_write.split(":")
            _armed = (point, int(n))
            cassette.write = _write_then_die_half_way
            os.fsync = _fsync_or_die
            os.replace = _replace_or_die


addons = [KillWrite()]
