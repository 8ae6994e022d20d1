"""Test-only addon: logs every path the proxy process writes, renames or creates (and, with
``write_audit_reads``, every file it opens for reading).

Loaded beside the cassette addon with ``-s``; a Python audit hook (PEP 578) sees each ``open``
for writing, ``os.rename``/``os.replace``, ``os.mkdir`` and ``os.remove`` anywhere in the
process, whatever code path made it. Each line of the ``write_audit_log`` file is
``<event> <path>`` (``read <path>`` for a read). The log file itself is opened once, before
the hook is installed.
"""

import os
import sys
import threading

from mitmproxy import ctx

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_lock = threading.Lock()
_log = None
_reads = False


def _hook(event: str, args: tuple) -> None:
    if _log is None:
        return
    if event == "open":
        path, mode, flags = args
        if isinstance(path, int):
            return
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & _WRITE_FLAGS
        )
        if not writes:
            if not _reads:
                return
            event = "read"
        paths = [path]
    elif event in ("os.rename", "os.mkdir", "os.remove", "os.symlink", "os.link"):
        paths = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
    else:
        return
    with _lock:
        for p in paths:
            _log.write(f"{event} {os.path.abspath(os.fsdecode(p))}\n")
        _log.flush()


class WriteAudit:
    def load(self, loader) -> None:  # type: ignore[no-untyped-def]
        loader.add_option("write_audit_log", str, "", "File to log every write path to.")
        loader.add_option("write_audit_reads", bool, False, "Log files opened for reading too.")

    def configure(self, updated: set[str]) -> None:
        global _log, _reads
        _reads = ctx.options.write_audit_reads
        if "write_audit_log" in updated and ctx.options.write_audit_log and _log is None:
            _log = open(ctx.options.write_audit_log, "a", buffering=1)  # noqa: SIM115 - open until exit
            sys.addaudithook(_hook)


addons = [WriteAudit()]
