"""A CI job's end, in any order: `cassette run` and the pytest plugin under SIGTERM, SIGINT and
SIGHUP (what CI sends on cancel or time-out), a command that ignores SIGTERM, a second signal,
the proxy killed first, the runner killed. Real processes; afterwards no process of the run is
alive (checked by process group, in /proc), and the summary was printed."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CASSETTE, TEST_ADDONS, UNUSED_PLUGINS

STARTUP = TEST_ADDONS / "startup.py"

pytestmark = pytest.mark.slow

# A child that ignores every signal the runner forwards: only the runner's SIGKILL ends it.
STUBBORN = """\
import signal, time
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(sig, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(300)
"""

COMMAND = f"""\
import os, signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", {STUBBORN!r}, __file__], stdout=subprocess.PIPE)
child.stdout.readline()  # it ignores signals from here on; it is in our process group
if "ignore" in sys.argv:  # SIGTERM does nothing but say so
    signal.signal(signal.SIGTERM, lambda *_: print("ignored SIGTERM", flush=True))
print("started", os.getpgrp(), flush=True)
time.sleep(300)
"""


@pytest.fixture(autouse=True)
def _nothing_left_even_when_a_test_fails(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Every process whose command line names this test's folder (each one it started does)
    is killed afterwards, whatever the test's outcome."""
    yield
    mark = str(tmp_path).encode()
    for name in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError), open(f"/proc/{name}/cmdline", "rb") as f:
            if mark in f.read():
                os.kill(int(name), signal.SIGKILL)


def _alive(pgid: int) -> list[int]:
    """The processes of process group ``pgid`` still running (zombies are not)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            found.append(int(name))
    return found


def _proxy_of(pid: int) -> int | None:
    """The proxy (the launcher) that process ``pid`` started, if it has started it."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            for child in f.read().split():
                try:
                    with open(f"/proc/{child}/cmdline", "rb") as cmd:
                        if b"proxy_addon.mitm.launch" in cmd.read():
                            return int(child)
                except OSError:
                    continue
    return None


def _wait_for[T](found: Callable[[], T | None], what: str, limit: float = 60) -> T:
    """Poll /proc (which has no event to wait on) until ``found`` gives something."""
    deadline = time.monotonic() + limit
    while (value := found()) is None:
        assert time.monotonic() < deadline, f"no {what} after {limit} s"
        time.sleep(0.01)
    return value


def _cassette_run(tmp_path: Path, *args: str, env: dict[str, str] | None = None):
    cassettes = tmp_path / "c"
    cassettes.mkdir(exist_ok=True)
    (tmp_path / "cmd.py").write_text(COMMAND)
    run = subprocess.Popen(
        [CASSETTE, "run", "--dir", str(cassettes), "--", sys.executable, str(tmp_path / "cmd.py")]
        + list(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    return run


def _started(run: subprocess.Popen[str]) -> tuple[int, int]:
    """Once the command runs: its process group, and the proxy's (its own)."""
    assert run.stdout is not None
    line = run.stdout.readline()
    assert line.startswith("started"), line + run.communicate(timeout=60)[1]
    proxy = _proxy_of(run.pid)
    assert proxy is not None
    return int(line.split()[1]), proxy


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=["SIGTERM", "SIGINT", "SIGHUP"]
)
def test_a_signal_ends_the_command_its_children_and_the_proxy_and_prints_the_summary(sig, tmp_path):
    """The command dies of the signal; its child, which ignores it, is killed after the
    grace."""
    run = _cassette_run(tmp_path, env={"CASSETTE_KILL_AFTER": "1"})
    command, proxy = _started(run)
    run.send_signal(sig)
    err = run.communicate(timeout=60)[1]
    assert run.returncode == 128 + sig, err
    assert "cassette summary: 0 hits, 0 misses" in err, err
    assert _alive(command) == [] and _alive(proxy) == [], err


def test_a_command_that_ignores_sigterm_is_killed_after_the_grace(tmp_path):
    run = _cassette_run(tmp_path, "ignore", env={"CASSETTE_KILL_AFTER": "1"})
    command, proxy = _started(run)
    run.send_signal(signal.SIGTERM)
    err = run.communicate(timeout=60)[1]
    assert run.returncode == 128 + signal.SIGTERM, err
    assert "cassette summary:" in err, err
    assert _alive(command) == [] and _alive(proxy) == [], err


def test_a_second_signal_kills_the_command_at_once(tmp_path):
    run = _cassette_run(tmp_path, "ignore", env={"CASSETTE_KILL_AFTER": "3600"})
    command, proxy = _started(run)
    run.send_signal(signal.SIGTERM)
    assert run.stdout is not None and run.stdout.readline() == "ignored SIGTERM\n"
    run.send_signal(signal.SIGINT)
    err = run.communicate(timeout=60)[1]  # not the hour of its grace
    assert run.returncode == 128 + signal.SIGTERM, err  # the first signal's
    assert "cassette summary:" in err, err
    assert _alive(command) == [] and _alive(proxy) == [], err


def test_the_proxy_dying_first_ends_the_command_and_says_so(tmp_path):
    run = _cassette_run(tmp_path, env={"CASSETTE_KILL_AFTER": "1"})
    command, proxy = _started(run)
    os.kill(proxy, signal.SIGKILL)
    err = run.communicate(timeout=60)[1]
    assert run.returncode == 1, err
    assert "cassette: the proxy stopped while the command ran (killed by SIGKILL)" in err
    assert _alive(command) == [] and _alive(proxy) == [], err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_while_the_proxy_starts_stops_it_and_runs_nothing(sig, tmp_path):
    run = _cassette_run(tmp_path)
    proxy = _wait_for(lambda: _proxy_of(run.pid), "proxy process")
    run.send_signal(sig)
    out, err = run.communicate(timeout=60)
    assert run.returncode == 128 + sig, err
    assert "started" not in out  # the command never ran
    assert "Traceback" not in err
    assert _alive(proxy) == []


def test_a_signal_while_the_proxy_stops_after_the_command_changes_only_the_exit_code(tmp_path):
    """The command has exited 0; the proxy is stopping (the test addon holds its ``done``
    until told): a SIGTERM then costs no summary and no traceback, and the run exits 143."""
    gate = tmp_path / "gate"
    stopping = tmp_path / "gate.stopping"
    (tmp_path / "c").mkdir()
    run = subprocess.Popen(
        [CASSETTE, "run", "--mode", "passthrough", "--dir", str(tmp_path / "c")]
        + ["--set", f"scripts={STARTUP}", "--set", f"startup_stop_gate={gate}", "--", "true"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proxy = _wait_for(lambda: _proxy_of(run.pid), "proxy process")
    _wait_for(lambda: True if stopping.exists() else None, "the proxy stopping")
    run.send_signal(signal.SIGTERM)
    gate.touch()
    err = run.communicate(timeout=60)[1]
    assert run.returncode == 128 + signal.SIGTERM, err
    assert "cassette summary: 0 requests passed through" in err
    assert "Traceback" not in err
    assert _alive(proxy) == []


def test_a_killed_runner_leaves_no_proxy_behind(tmp_path):
    run = _cassette_run(tmp_path)
    command, proxy = _started(run)
    run.kill()  # SIGKILL: nothing can be forwarded; the proxy learns it from the kernel
    run.wait(60)
    try:
        _wait_for(lambda: True if not _alive(proxy) else None, "end of the proxy")
    finally:
        os.killpg(command, signal.SIGKILL)  # the command's group is left to its parent's reaper
        run.communicate(timeout=60)


PLUGIN_TEST = """\
import os, pathlib, time

def test_waits():
    pathlib.Path(os.environ["STARTED"]).write_text("started")
    time.sleep(300)
"""


@pytest.mark.parametrize(
    ("sig", "code"),
    [(signal.SIGINT, pytest.ExitCode.INTERRUPTED), (signal.SIGTERM, 143)],
    ids=["SIGINT", "SIGTERM"],
)
def test_the_plugin_stops_its_proxy_and_prints_the_summary_on_a_signal(sig, code, tmp_path):
    (tmp_path / "test_waits.py").write_text(PLUGIN_TEST)
    started = tmp_path / "started"
    # Ctrl-C's handler set in the session itself: a suite run as a shell's background job
    # passes SIGINT on ignored, and Python keeps it so
    interruptible = (
        "import signal, sys, pytest; signal.signal(signal.SIGINT, signal.default_int_handler);"
        " sys.exit(pytest.main(sys.argv[1:]))"
    )
    session = subprocess.Popen(
        [sys.executable, "-c", interruptible, "-p", "no:cacheprovider", *UNUSED_PLUGINS]
        + ["--cassette-mode=auto"]
        + [f"--cassette-dir={tmp_path / 'c'}", str(tmp_path / "test_waits.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "STARTED": str(started)},
    )
    proxy = _wait_for(lambda: _proxy_of(session.pid), "proxy process")
    _wait_for(lambda: True if started.exists() else None, "test start")
    session.send_signal(sig)
    out = session.communicate(timeout=60)[0]
    assert session.returncode == code, out
    assert "cassette summary: 0 hits, 0 recorded, 0 unused recordings (of 0)" in out
    assert _alive(proxy) == []


# Python, not sh: its Ctrl-C handler is set before it reads, so a Ctrl-C typed as soon as
# "got" is printed ends it whatever it is doing (sh would be between "echo got" and forking
# sleep, whose SIGINT it defers until that child ends: the test hung under load)
READ_THEN_WAIT = (
    "import time; print('ask', flush=True); x = input(); print('got', x, flush=True); "
    "time.sleep(300)"
)


# the child does nothing but exec: no lock of a thread is taken between the fork and the exec
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_on_a_terminal_the_command_reads_the_keyboard_and_gets_ctrl_c(tmp_path):
    """As a shell gives it: the command in the terminal's foreground, so it reads the keyboard
    (a background process group would be stopped by SIGTTIN) and a Ctrl-C goes to it."""
    (tmp_path / "c").mkdir()
    pid, terminal = pty.fork()
    if pid == 0:  # the child: cassette run on the terminal
        os.execv(
            CASSETTE,
            [CASSETTE, "run", "--mode", "passthrough", "--dir", str(tmp_path / "c"), "--"]
            + [sys.executable, "-c", READ_THEN_WAIT, str(tmp_path)],
        )
    seen = b""

    def until(marker: bytes) -> None:
        nonlocal seen
        while marker not in seen:
            ready, _, _ = select.select([terminal], [], [], 60)
            assert ready, f"no {marker!r} in {seen!r}"
            seen += os.read(terminal, 4096)

    until(b"ask")
    os.write(terminal, b"hello\n")
    until(b"got hello")
    os.write(terminal, b"\x03")  # Ctrl-C, as typed
    until(b"cassette summary: 0 requests passed through")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 128 + signal.SIGINT  # the command's own code
    os.close(terminal)
