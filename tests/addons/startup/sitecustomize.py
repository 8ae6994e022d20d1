"""Test-only: what a Python process opens under a folder, from its first line on, and a slow disk.

Python's ``site`` imports ``sitecustomize`` from ``PYTHONPATH`` when a process starts, so a test
that puts this folder first on ``PYTHONPATH`` has it in every process it starts, ``mitmdump``
included, before any addon is loaded: its start-up is seen too, which an addon loaded with
``-s`` after ours (``write_audit.py``) would miss. A Python audit hook (PEP 578) sees each
``open`` whatever code path made it. Set by environment variables:

- ``OPEN_AUDIT_UNDER``: the folder watched (nothing is done without it);
- ``OPEN_AUDIT_LOG``: a file to which each ``*.json`` path opened under the folder is appended;
- ``OPEN_AUDIT_DELAY``: seconds the first such open waits, as a slow disk would.
"""

import os
import sys
import threading
import time

_UNDER = os.environ.get("OPEN_AUDIT_UNDER")
_lock = threading.Lock()
_delay = [float(os.environ.get("OPEN_AUDIT_DELAY") or 0)]


def _hook(event: str, args: tuple) -> None:
    if event != "open" or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    path = os.path.abspath(os.fsdecode(args[0]))
    if not path.startswith(_UNDER + os.sep) or not path.endswith(".json"):
        return
    with _lock:
        log = os.environ.get("OPEN_AUDIT_LOG")
        if log:
            with open(log, "a") as f:  # not under the folder: not seen again
                f.write(path + "\n")
        if _delay[0]:
            time.sleep(_delay[0])
            _delay[0] = 0


if _UNDER:
    _UNDER = os.path.abspath(_UNDER)
    sys.addaudithook(_hook)
