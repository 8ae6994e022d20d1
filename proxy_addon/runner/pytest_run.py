"""The pytest plugin's work, imported only when a session runs through the proxy
(``--cassette-mode``): the proxy of this pytest process, the test each request belongs to, the
run's summary (its xdist workers' combined), and pruning unused recordings.

``proxy_addon/pytest_plugin.py`` is the entry point pytest loads in every run of every project
where the package is installed; it stays light and calls this.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import orjson
import pytest

from proxy_addon.reports import publish
from proxy_addon.reports.publish import Targets
from proxy_addon.runner import providers
from proxy_addon.runner.channel import CONTROL_HOST
from proxy_addon.runner.interface import owned
from proxy_addon.runner.process import (
    RUNNER_OPTIONS,
    ProxyStartError,
    RunningProxy,
    start_proxy,
    start_timeout,
    user_options,
)
from proxy_addon.runner.providers import placeholder_keys, placeholder_note
from proxy_addon.summary import NEEDS_RECORDINGS, NOTHING_REACHED, Summary

CONTROL = f"http://{CONTROL_HOST}"
REPORTS_KEY = pytest.StashKey[Targets]()


def report_targets(config: pytest.Config) -> Targets:
    """The reports asked for with ``--cassette-markdown``, ``--cassette-junit``, ... (the
    options of ``cassette run``, prefixed)."""
    try:
        return publish.targets(
            config.getoption("--cassette-markdown"),
            config.getoption("--cassette-junit"),
            config.getoption("--cassette-report"),
            not config.getoption("--cassette-no-step-summary"),
            config.getoption("--cassette-prices"),
        )
    except ValueError as e:
        raise pytest.UsageError(f"--cassette-prices: {e}") from None


class ProxySession:
    """The proxy of this pytest process and what it reported."""

    def __init__(self, config: pytest.Config, mode: str) -> None:
        self.config = config
        self.mode = mode
        self.dir = Path(
            config.getoption("--cassette-dir") or os.environ.get("CASSETTE_DIR") or "cassettes"
        ).resolve()
        if mode not in NEEDS_RECORDINGS:
            self.dir.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix="cassette-pytest-"))
        self.summary_path = self.tmp / "summary.json"
        self.summary: Summary | None = None
        self.signal: int | None = None  # SIGTERM or SIGHUP that ended the session
        options: dict[str, str | list[str]] = {
            "cassette_pace": config.getoption("--cassette-pace"),
            "cassette_summary": str(self.summary_path),
            "cassette_step_summary": "false",  # the run's reports are written once, at its end
            "cassette_interface": "pytest",
        }
        if config.getoption("--cassette-older-than"):
            options["cassette_max_age"] = config.getoption("--cassette-older-than")
        given = {
            "cassette_mode": mode,
            "cassette_dir": str(self.dir),
            "cassette_pace": config.getoption("--cassette-pace"),
        }
        if "cassette_max_age" in options:
            given["cassette_max_age"] = str(options["cassette_max_age"])
        mine = owned("pytest", given, ["cassette_summary", "cassette_interface", *RUNNER_OPTIONS])
        try:
            options |= user_options(config.getoption("--cassette-set"), mine, "--cassette-set")
            listeners = providers.choose(config.getoption("--cassette-listeners"))
            limit = start_timeout(config.getoption("--cassette-start-timeout"))
        except ValueError as e:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise pytest.UsageError(f"cassette: {e}") from None
        try:
            self.proxy: RunningProxy | None = start_proxy(
                self.dir,
                mode,
                confdir=self.tmp / "ca",
                options=options,
                listeners=listeners,
                timeout=limit,
                progress=_tell,
            )
        except ProxyStartError as e:
            shutil.rmtree(self.tmp, ignore_errors=True)
            how = (
                f": move that listener with --cassette-listeners {e.busy_role}:PORT, or leave "
                "it out"
                if e.busy_role and e.busy_role != "proxy"
                else ""
            )
            tail = f"; its last log lines:\n{e.tail}" if e.tail else ""
            raise pytest.UsageError(
                f"cassette: the proxy did not start: {e.why}{how}{tail}"
            ) from None
        self.saved_env = {k: os.environ.get(k) for k in self.proxy.client_env({})}
        self.saved_env.update({k: os.environ.get(k) for k in ("NO_PROXY", "no_proxy")})
        os.environ.update(self.proxy.client_env({}))
        for name in ("NO_PROXY", "no_proxy"):
            os.environ.pop(name, None)
        placeholders = placeholder_keys(os.environ) if mode == "replay" else {}
        self.saved_env.update({k: os.environ.get(k) for k in placeholders})
        os.environ.update(placeholders)
        self.control = httpx.Client(proxy=self.proxy.url, timeout=10, trust_env=False)
        self._saved_handlers = {
            sig: signal.signal(sig, self._interrupted)
            for sig in (signal.SIGTERM, signal.SIGHUP)
            if signal.getsignal(sig) is signal.SIG_DFL  # a handler of the user's stays
        }

    def _interrupted(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM or SIGHUP (a CI cancel): ended as Ctrl-C ends a session, so the proxy is
        stopped and the summary printed; the exit code is then 128+N."""
        if self.signal is None:
            self.signal = signum
            raise KeyboardInterrupt(signal.Signals(signum).name)

    def begin_test(self, test_id: str | None, cassette: str | None) -> None:
        self.control.post(f"{CONTROL}/test", json={"test_id": test_id, "cassette": cassette})

    def misses(self) -> list[str]:
        return self.control.get(f"{CONTROL}/misses").json()["misses"]

    def stop(self) -> None:
        if self.proxy is None:
            return
        for sig, handler in self._saved_handlers.items():
            signal.signal(sig, handler)
        self.control.close()
        self.proxy.stop()
        self.proxy = None
        for name, value in self.saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self.summary = Summary.read(self.summary_path)
        shutil.rmtree(self.tmp, ignore_errors=True)


def worker_output(session: ProxySession) -> str | None:
    """What an xdist worker hands its controller: its summary, as JSON."""
    return orjson.dumps(session.summary.to_json()).decode() if session.summary else None


def worker_summary(raw: str) -> Summary:
    return Summary.from_json(orjson.loads(raw))


def combined(own: ProxySession | None, workers: list[Summary]) -> Summary | None:
    """The run's summary: this process's and its xdist workers' added up."""
    summaries = list(workers)
    if own is not None and own.summary is not None:
        summaries.append(own.summary)
    return Summary.combine(summaries) if summaries else None


def _tell(line: str) -> None:
    """A line for the user while pytest configures (before its terminal reporter writes)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def run_failed(summary: Summary, mode: str) -> str | None:
    """Why the run fails though its tests may all have passed, in one line (a miss outside
    any test, a fault inside the proxy, a connection a replay refused, or in replay on CI no
    request at all); None when it does not."""
    return summary.failure(mode, os.environ)


def report(
    terminalreporter: Any, config: pytest.Config, summary: Summary | None, exitstatus: int
) -> None:
    """The summary line at the end of the run, and pruning when asked."""
    if summary is None:
        terminalreporter.write_line("cassette: the proxy wrote no summary")
        return
    for message in summary.miss_report():  # a miss outside any test is told here only
        terminalreporter.write_line(message)
    terminalreporter.write_line(summary.line())
    if not hasattr(config, "workerinput"):  # the controller reports the whole run
        publish.publish(
            summary,
            config.getoption("--cassette-mode"),
            config.stash[REPORTS_KEY],
            os.environ,
            terminalreporter.write_line,  # the terminal's stdout, where GitHub reads commands
            terminalreporter.write_line,
        )
    # the placeholders the sessions (each xdist worker's) set, found again in the environment
    # they were set in (restored by now; the xdist controller set none itself)
    placeholders = placeholder_keys(os.environ)
    if placeholders and config.getoption("--cassette-mode") == "replay":
        terminalreporter.write_line(placeholder_note(placeholders))
    if summary.reached_nothing:
        terminalreporter.write_line(f"cassette: warning: {NOTHING_REACHED}")
    reason = run_failed(summary, config.getoption("--cassette-mode"))
    if reason is not None:
        terminalreporter.write_line(f"cassette: the run fails: {reason}")
    if config.getoption("--cassette-prune"):
        if summary.failed:  # the run failed (pytest_sessionfinish)
            exitstatus = max(exitstatus, pytest.ExitCode.TESTS_FAILED)
        _prune(terminalreporter, config, summary, exitstatus)


def _not_a_full_passing_run(
    terminalreporter: Any, config: pytest.Config, summary: Summary, exitstatus: int
) -> str | None:
    """Why this run cannot tell which recordings are unused, or None when it can: only a run
    of every test, all passing, through a mode that looks recordings up, used every recording
    that is still needed."""
    stats = terminalreporter.stats
    if config.getoption("collectonly"):
        return "the tests were only collected"
    if config.getoption("--cassette-mode") == "passthrough":
        return "passthrough mode looks no recording up"
    if config.args_source == pytest.Config.ArgsSource.ARGS:
        return "tests were selected on the command line"
    if config.getoption("keyword") or config.getoption("markexpr"):
        return "tests were selected with -k or -m"
    if stats.get("deselected"):
        return f"{len(stats['deselected'])} tests were deselected"
    if exitstatus != pytest.ExitCode.OK:
        names = {int(code): code.name.lower() for code in pytest.ExitCode}
        return f"the run did not pass ({names.get(exitstatus, f'exit code {exitstatus}')})"
    if summary.reached_nothing:
        return "no request reached the proxy"
    for outcome, how in (("skipped", "skipped"), ("xfailed", "expected to fail, and did")):
        if stats.get(outcome):  # it may have stopped before its requests
            return f"{len(stats[outcome])} tests were {how}: their recordings would look unused"
    return None


def _prune(terminalreporter: Any, config: pytest.Config, summary: Summary, exitstatus: int) -> None:
    unused = summary.unused
    why_not = _not_a_full_passing_run(terminalreporter, config, summary, exitstatus)
    if why_not is not None:
        terminalreporter.write_line(
            f"cassette: not pruning: {why_not}; only a full, passing "
            "run shows which recordings are unused"
        )
        return
    if not unused:
        terminalreporter.write_line("cassette: nothing to prune")
        return
    verb = (
        "deleting"
        if config.getoption("cassette_yes")
        else "unused (run with --cassette-yes to delete)"
    )
    terminalreporter.write_line(f"cassette: {len(unused)} recordings {verb}:")
    for path in unused:
        terminalreporter.write_line(f"  {path}")
        if config.getoption("cassette_yes"):
            Path(path).unlink(missing_ok=True)
