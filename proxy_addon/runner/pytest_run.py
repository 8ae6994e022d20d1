"""The pytest plugin's work, imported only when a session runs through the proxy
(``--cassette-mode``): the proxy of this pytest process, the test each request belongs to, the
run's summary (its xdist workers' combined), and pruning unused recordings.

``proxy_addon/pytest_plugin.py`` is the entry point pytest loads in every run of every project
where the package is installed; it stays light and calls this.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from proxy_addon.runner.control import CONTROL_HOST
from proxy_addon.runner.process import RunningProxy, set_options, start_proxy
from proxy_addon.runner.providers import placeholder_keys, placeholder_note
from proxy_addon.summary import NEEDS_RECORDINGS, NOTHING_REACHED, Summary, nothing_reached_fails

CONTROL = f"http://{CONTROL_HOST}"


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
        options: dict[str, str | list[str]] = {
            "cassette_pace": config.getoption("--cassette-pace"),
            "cassette_summary": str(self.summary_path),
        }
        if config.getoption("--cassette-older-than"):
            options["cassette_max_age"] = config.getoption("--cassette-older-than")
        try:
            options |= set_options(config.getoption("--cassette-set"))
        except ValueError as e:
            raise pytest.UsageError(f"--cassette-set: {e}") from None
        try:
            self.proxy: RunningProxy | None = start_proxy(
                self.dir, mode, confdir=self.tmp / "ca", options=options, listeners=True
            )
        except Exception as e:  # noqa: BLE001 - any reason: the session cannot run
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise pytest.UsageError(f"cassette: the proxy did not start: {e}") from None
        self.saved_env = {k: os.environ.get(k) for k in self.proxy.client_env({})}
        self.saved_env.update({k: os.environ.get(k) for k in ("NO_PROXY", "no_proxy")})
        os.environ.update(self.proxy.client_env({}))
        for name in ("NO_PROXY", "no_proxy"):
            os.environ.pop(name, None)
        placeholders = placeholder_keys(os.environ) if mode == "replay" else {}
        self.saved_env.update({k: os.environ.get(k) for k in placeholders})
        os.environ.update(placeholders)
        self.control = httpx.Client(proxy=self.proxy.url, timeout=10, trust_env=False)

    def begin_test(self, test_id: str | None, cassette: str | None) -> None:
        self.control.post(f"{CONTROL}/test", json={"test_id": test_id, "cassette": cassette})

    def misses(self) -> list[str]:
        return self.control.get(f"{CONTROL}/misses").json()["misses"]

    def stop(self) -> None:
        if self.proxy is None:
            return
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


def run_failed(summary: Summary, mode: str) -> bool:
    """A miss outside any test, a fault inside the proxy, a connection a replay refused, or in
    replay on CI no request at all: the tests may all have passed, the run did not."""
    nothing = summary.requests == 0 and nothing_reached_fails(mode, os.environ)
    return summary.failed or nothing


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
    # the placeholders the sessions (each xdist worker's) set, found again in the environment
    # they were set in (restored by now; the xdist controller set none itself)
    placeholders = placeholder_keys(os.environ)
    if placeholders and config.getoption("--cassette-mode") == "replay":
        terminalreporter.write_line(placeholder_note(placeholders))
    if summary.requests == 0:
        terminalreporter.write_line(f"cassette: warning: {NOTHING_REACHED}")
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
        return f"the run did not pass ({pytest.ExitCode(exitstatus).name.lower()})"
    if summary.requests == 0:
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
