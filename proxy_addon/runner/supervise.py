"""A command's whole life beside the proxy (``cassette run``), whatever happens: the command in
its own process group, the signals a CI system sends on cancel or time-out (SIGTERM, SIGINT,
SIGHUP) forwarded to that group, bounded waits, and nothing left running afterwards.

- A signal N reaching the runner is sent on to the command's process group; if the group is not
  gone ``GRACE`` seconds later (``$CASSETTE_KILL_AFTER``; a command that ignores SIGTERM), it
  is killed. A second signal
  kills it at once. Once the command is gone, the rest of its group gets the same treatment.
- The proxy stopping on its own while the command runs (killed, crashed) ends the command the
  same way: nothing can pass through a proxy that is gone.
- A signal while the proxy starts stops the start (``start_proxy``'s ``wake``).

The runner then stops the proxy, prints its summary and exits ``128+N`` (or the command's own
non-zero code). On a terminal the command gets the foreground, as a shell gives it, so it reads
the keyboard and a Ctrl-C goes to it alone.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import Any

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
GRACE = 10.0  # seconds a process group gets between a signal and SIGKILL
GRACE_ENV = "CASSETTE_KILL_AFTER"  # another number of seconds for that
_POLL = 0.05  # seconds between checks that a process group is gone (no event tells it)


def grace_from(environ: Mapping[str, str]) -> float:
    """``$CASSETTE_KILL_AFTER`` seconds, or ``GRACE``; ``ValueError`` for anything but a
    number from 0 up."""
    given = environ.get(GRACE_ENV, "")
    if not given:
        return GRACE
    try:
        seconds = float(given)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < 1e6:
        raise ValueError(f"{GRACE_ENV} must be a number of seconds from 0, not {given!r}")
    return seconds


class Supervisor:
    """From ``__enter__`` on, SIGINT, SIGTERM and SIGHUP are caught (not acted on by Python's
    defaults) and queued for ``run``, but a SIGHUP this process was started ignoring
    (``nohup``); ``__exit__`` restores the handlers."""

    def __init__(self, grace: float | None = None) -> None:
        self.grace = grace if grace is not None else grace_from(os.environ)
        self.signal: int | None = None  # the first signal received
        self.signals = 0  # how many were received
        self.wake = threading.Event()  # set on any signal: stops a proxy's start-up wait
        self.proxy_died = False
        self._killed = False  # the command's group got SIGKILL already
        # SimpleQueue: its put may run in a signal handler while the main thread is inside get
        self._events: queue.SimpleQueue[tuple[str, int | None]] = queue.SimpleQueue()
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> Supervisor:
        for sig in FORWARDED:
            if sig == signal.SIGHUP and signal.getsignal(sig) is signal.SIG_IGN:
                continue  # nohup's: a hang-up was meant to pass unnoticed
            # SIGINT and SIGTERM are handled even when inherited ignored (a shell's background
            # job ignores SIGINT): a CI system's cancel must still end the run
            self._saved[sig] = signal.signal(sig, self._caught)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)

    def _caught(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is None:
            self.signal = signum
        self.signals += 1
        self.wake.set()
        self._events.put(("signal", signum))

    def exit_code(self, command_code: int | None) -> int:
        """``128+N`` after a signal N, unless the command exited non-zero of its own accord;
        otherwise the command's code (a command killed by signal M: ``128+M``)."""
        own = command_code if command_code is not None and command_code > 0 else None
        if self.signal is not None:
            return own if own is not None else 128 + self.signal
        if command_code is None:
            return 1
        return 128 - command_code if command_code < 0 else command_code

    def run(
        self, command: Sequence[str], env: Mapping[str, str], proxy_ended: threading.Event
    ) -> int:
        """Run ``command`` to its end, and its process group's; returns its exit status as
        ``subprocess`` gives it (negative: killed by that signal). ``OSError`` when it cannot
        be started."""
        if self.signal is not None:  # a signal came while the proxy started
            return -self.signal
        proc = subprocess.Popen(list(command), env=dict(env), process_group=0)
        terminal = _take_terminal(proc.pid)
        self._when(lambda: self._events.put(("exit", proc.wait())))
        self._when_ended(proxy_ended)
        deadline: float | None = None
        code: int | None = None
        try:
            while code is None:
                try:
                    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                    kind, value = self._events.get(timeout=timeout)
                except queue.Empty:
                    _signal_group(proc.pid, signal.SIGKILL)  # it outlived its grace
                    self._killed = True
                    deadline = None
                    continue
                if kind == "exit":
                    code = value
                elif kind == "proxy" and deadline is None:
                    self.proxy_died = True
                    _signal_group(proc.pid, signal.SIGTERM)
                    deadline = time.monotonic() + self.grace
                elif kind == "signal" and value is not None:
                    first = deadline is None
                    _signal_group(proc.pid, value if first else signal.SIGKILL)
                    self._killed = self._killed or not first
                    deadline = time.monotonic() + self.grace if first else None
        finally:
            if terminal is not None:
                _give_back_terminal(terminal)
        if self.signal is not None or self.proxy_died:
            self._end_group(proc.pid)
        return code

    def serve(self, proxy_ended: threading.Event) -> None:
        """Wait (``cassette proxy``) until a signal comes or the proxy stops on its own
        (``proxy_died``)."""
        if self.signal is not None:
            return
        self._when_ended(proxy_ended)
        kind, _ = self._events.get()
        self.proxy_died = kind == "proxy"

    @staticmethod
    def _when(wait_then_tell: Callable[[], None]) -> None:
        threading.Thread(target=wait_then_tell, daemon=True).start()

    def _when_ended(self, proxy_ended: threading.Event) -> None:
        """Queue ``proxy`` when the proxy's output ends (it exited)."""

        def tell() -> None:
            proxy_ended.wait()
            self._events.put(("proxy", None))

        self._when(tell)

    def _end_group(self, pgid: int) -> None:
        """What is left of the command's process group (its children) after a signal: the
        first signal again, then SIGKILL after the grace, or at once on another signal (or if
        the group was killed already)."""
        if self._killed:
            _signal_group(pgid, signal.SIGKILL)
            return
        _signal_group(pgid, self.signal or signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        seen = self.signals
        while _group_alive(pgid):
            if time.monotonic() >= deadline or self.signals > seen:
                _signal_group(pgid, signal.SIGKILL)
                return
            time.sleep(_POLL)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # gone already
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs. A zombie does not: an orphan's exit status
    waits for the system's reaper (PID 1), which in a container may take its time or never
    come, and killpg would count it. Read from /proc where there is one."""
    if not os.path.isdir("/proc/self"):
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):  # gone meanwhile
            continue
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def _take_terminal(pgid: int) -> int | None:
    """Make the command's group the terminal's foreground, if we hold it; returns the
    terminal's file descriptor to give it back, or None."""
    try:
        fd = sys.stdin.fileno()
        if not os.isatty(fd) or os.tcgetpgrp(fd) != os.getpgrp():
            return None
        _with_ttou_ignored(lambda: os.tcsetpgrp(fd, pgid))
        _signal_group(pgid, signal.SIGCONT)  # in case it read the terminal before this
        return fd
    except (OSError, ValueError):  # no terminal, or stdin closed
        return None


def _give_back_terminal(fd: int) -> None:
    with contextlib.suppress(OSError):  # the terminal is gone (SIGHUP)
        _with_ttou_ignored(lambda: os.tcsetpgrp(fd, os.getpgrp()))


def _with_ttou_ignored(call: Any) -> None:
    """A process not in the terminal's foreground may change it only with SIGTTOU ignored."""
    saved = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        call()
    finally:
        signal.signal(signal.SIGTTOU, saved)
