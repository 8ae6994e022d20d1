"""pytest plugin: ``pytest --cassette-mode=replay`` runs the suite through the recording proxy.

One proxy per pytest process (each xdist worker has its own) with a fresh CA, its environment
variables set for the whole session so any client in the process or its subprocesses goes
through it. Each test's recordings go to its own cassette (``by-test/<node id>/``) told to the
proxy over its control channel; ``@pytest.mark.cassette("name")`` shares one between tests;
a lookup falls back to the shared cassettes. A replay miss fails the test that caused it.
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
from proxy_addon.summary import (
    MODES,
    NEEDS_RECORDINGS,
    NOTHING_REACHED,
    Summary,
    nothing_reached_fails,
)

CONTROL = f"http://{CONTROL_HOST}"
_PROXY_KEY = pytest.StashKey["_ProxySession"]()
_WORKER_SUMMARIES = pytest.StashKey[list[Summary]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cassette", "record and replay LLM API traffic through a proxy")
    group.addoption("--cassette-mode", choices=MODES, default=None,
                    help="Run the session through the cassette proxy in this mode "
                         "(off when not given).")
    group.addoption("--cassette-dir", default=None,
                    help="Cassette directory (default: $CASSETTE_DIR or ./cassettes).")
    group.addoption("--cassette-pace", default="0",
                    help="Stream replay speed: 0 at once, 1 with the recorded gaps.")
    group.addoption("--cassette-older-than", default=None, metavar="AGE",
                    help="cassette_max_age: recordings older than AGE (30d, 12h) are stale; "
                         "--cassette-mode=refresh re-records only them, replay warns.")
    group.addoption("--cassette-set", action="append", default=[], metavar="NAME=VALUE",
                    help="Any other proxy option, e.g. cassette_stale=fail or "
                         "cassette_normalize=dates (repeat it).")
    group.addoption("--cassette-prune", action="store_true",
                    help="After a full run, list recordings no test used (delete with "
                         "--cassette-yes).")
    group.addoption("--cassette-yes", action="store_true",
                    help="With --cassette-prune: delete the unused recordings.")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "cassette(name): record and replay this test in the named shared cassette")
    mode = config.getoption("--cassette-mode")
    if mode is None:
        return
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return  # xdist controller: the workers run the tests, and each starts its own proxy
    config.stash[_PROXY_KEY] = _ProxySession(config, mode)


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(_PROXY_KEY, None)
    if session is not None:
        session.stop()


class _ProxySession:
    """The proxy of this pytest process and what it reported."""

    def __init__(self, config: pytest.Config, mode: str) -> None:
        self.config = config
        self.mode = mode
        self.dir = Path(config.getoption("--cassette-dir") or os.environ.get("CASSETTE_DIR")
                        or "cassettes").resolve()
        if mode not in NEEDS_RECORDINGS:
            self.dir.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix="cassette-pytest-"))
        self.summary_path = self.tmp / "summary.json"
        self.summary: Summary | None = None
        options: dict[str, str | list[str]] = {
            "cassette_pace": config.getoption("--cassette-pace"),
            "cassette_summary": str(self.summary_path)}
        if config.getoption("--cassette-older-than"):
            options["cassette_max_age"] = config.getoption("--cassette-older-than")
        try:
            options |= set_options(config.getoption("--cassette-set"))
        except ValueError as e:
            raise pytest.UsageError(f"--cassette-set: {e}") from None
        try:
            self.proxy: RunningProxy | None = start_proxy(
                self.dir, mode, confdir=self.tmp / "ca", options=options, listeners=True)
        except Exception as e:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise pytest.UsageError(f"cassette: the proxy did not start: {e}") from None
        self.saved_env = {k: os.environ.get(k) for k in self.proxy.client_env({})}
        self.saved_env.update({k: os.environ.get(k) for k in ("NO_PROXY", "no_proxy")})
        os.environ.update(self.proxy.client_env({}))
        for name in ("NO_PROXY", "no_proxy"):
            os.environ.pop(name, None)
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


def _session(item: pytest.Item) -> _ProxySession | None:
    return item.config.stash.get(_PROXY_KEY, None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item):  # type: ignore[no-untyped-def]
    session = _session(item)
    if session is not None:
        marker = item.get_closest_marker("cassette")
        name = str(marker.args[0]) if marker and marker.args else item.nodeid
        session.begin_test(item.nodeid, name)
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    session = _session(item)
    if session is None or call.when != "call":
        return
    report = outcome.get_result()
    misses = session.misses()
    if misses and report.outcome != "failed":
        # the application may have swallowed the 404: the test still fails, with the reason
        report.outcome = "failed"
        report.longrepr = "cassette replay miss:\n" + "\n".join(misses)


def pytest_runtest_teardown(item: pytest.Item) -> None:
    session = _session(item)
    if session is not None:
        session.begin_test(None, None)


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    own = config.stash.get(_PROXY_KEY, None)
    if own is not None:
        own.stop()
        if hasattr(config, "workerinput"):
            if own.summary is not None:
                config.workeroutput["cassette_summary"] = orjson.dumps(
                    own.summary.to_json()).decode()
            return  # the controller judges the whole run
    if config.getoption("--cassette-mode") is None:
        return
    summary = _combined(config)
    if summary is None or session.exitstatus != pytest.ExitCode.OK:
        return
    # a miss outside any test, a fault inside the proxy, a connection a replay refused, or in
    # replay on CI no request at all: the tests may all have passed, the run did not
    nothing = summary.requests == 0 and nothing_reached_fails(
        config.getoption("--cassette-mode"), os.environ)
    if summary.failed or nothing:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)  # an xdist hook: absent without xdist
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: collect each worker's summary."""
    raw = getattr(node, "workeroutput", {}).get("cassette_summary")
    if raw:
        node.config.stash.setdefault(_WORKER_SUMMARIES, []).append(
            Summary.from_json(orjson.loads(raw)))


def _combined(config: pytest.Config) -> Summary | None:
    own = config.stash.get(_PROXY_KEY, None)
    summaries = list(config.stash.get(_WORKER_SUMMARIES, []))
    if own is not None and own.summary is not None:
        summaries.append(own.summary)
    return Summary.combine(summaries) if summaries else None


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if config.getoption("--cassette-mode") is None:
        return
    summary = _combined(config)
    if summary is None:
        terminalreporter.write_line("cassette: the proxy wrote no summary")
        return
    terminalreporter.write_line(summary.line())
    if summary.requests == 0:
        terminalreporter.write_line(f"cassette: warning: {NOTHING_REACHED}")
    if config.getoption("--cassette-prune"):
        if summary.failed:  # see pytest_sessionfinish: the run failed
            exitstatus = max(exitstatus, pytest.ExitCode.TESTS_FAILED)
        _prune(terminalreporter, config, summary, exitstatus)


def _not_a_full_passing_run(terminalreporter: Any, config: pytest.Config, summary: Summary,
                            exitstatus: int) -> str | None:
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


def _prune(terminalreporter: Any, config: pytest.Config, summary: Summary,
           exitstatus: int) -> None:
    unused = summary.unused
    why_not = _not_a_full_passing_run(terminalreporter, config, summary, exitstatus)
    if why_not is not None:
        terminalreporter.write_line(f"cassette: not pruning: {why_not}; only a full, passing "
                                    "run shows which recordings are unused")
        return
    if not unused:
        terminalreporter.write_line("cassette: nothing to prune")
        return
    verb = "deleting" if config.getoption("cassette_yes") else \
        "unused (run with --cassette-yes to delete)"
    terminalreporter.write_line(f"cassette: {len(unused)} recordings {verb}:")
    for path in unused:
        terminalreporter.write_line(f"  {path}")
        if config.getoption("cassette_yes"):
            Path(path).unlink(missing_ok=True)
