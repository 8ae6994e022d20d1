"""pytest plugin: ``pytest --cassette-mode=replay`` runs the suite through the recording proxy.

pytest loads this module (entry point ``pytest11``) in every run of every project where the
package is installed, so it only declares its options and marker and stays out of the way:
nothing else of the package is imported unless ``--cassette-mode`` is given
(``runner/pytest_run.py`` does the work then).

One proxy per pytest process (each xdist worker has its own) with a fresh CA, its environment
variables set for the whole session so any client in the process or its subprocesses goes
through it. Each test's recordings go to its own cassette (``by-test/<node id>/``) told to the
proxy over its control channel; ``@pytest.mark.cassette("name")`` shares one between tests;
a lookup falls back to the shared cassettes. A replay miss fails the test that caused it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from proxy_addon.summary import MODES

if TYPE_CHECKING:
    from proxy_addon.runner.pytest_run import ProxySession
    from proxy_addon.summary import Summary

_PROXY_KEY = pytest.StashKey["ProxySession"]()
_WORKER_SUMMARIES = pytest.StashKey[list["Summary"]]()  # xdist workers' summaries


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cassette", "record and replay LLM API traffic through a proxy")
    group.addoption(
        "--cassette-mode",
        choices=MODES,
        default=None,
        help="Run the session through the cassette proxy in this mode (off when not given).",
    )
    group.addoption(
        "--cassette-dir",
        default=None,
        help="Cassette directory (default: $CASSETTE_DIR or ./cassettes).",
    )
    group.addoption(
        "--cassette-pace",
        default="0",
        help="Stream replay speed: 0 at once, 1 with the recorded gaps.",
    )
    group.addoption(
        "--cassette-older-than",
        default=None,
        metavar="AGE",
        help="cassette_max_age: recordings older than AGE (30d, 12h) are stale; "
        "--cassette-mode=refresh re-records only them, replay warns.",
    )
    group.addoption(
        "--cassette-set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="Any other proxy option, e.g. cassette_stale=fail or "
        "cassette_normalize=dates (repeat it).",
    )
    group.addoption(
        "--cassette-listeners",
        default="all",
        metavar="all|none|NAME[:PORT],...",
        help="Which base-URL listeners open (free ports unless a PORT is given): all, none, "
        "or provider names such as openai,anthropic:8082.",
    )
    group.addoption(
        "--cassette-start-timeout",
        default=None,
        metavar="SECONDS",
        help="How long the proxy may take to start (default: $CASSETTE_START_TIMEOUT or 60).",
    )
    group.addoption(
        "--cassette-prune",
        action="store_true",
        help="After a full run, list recordings no test used (delete with --cassette-yes).",
    )
    group.addoption(
        "--cassette-yes",
        action="store_true",
        help="With --cassette-prune: delete the unused recordings.",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "cassette(name): record and replay this test in the named shared cassette"
    )
    mode = config.getoption("--cassette-mode")
    if mode is None:
        return
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return  # xdist controller: the workers run the tests, and each starts its own proxy
    from proxy_addon.runner.pytest_run import ProxySession

    config.stash[_PROXY_KEY] = ProxySession(config, mode)


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(_PROXY_KEY, None)
    if session is not None:
        session.stop()


def _session(item: pytest.Item) -> ProxySession | None:
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
    mode = config.getoption("--cassette-mode")
    if mode is None:
        return
    from proxy_addon.runner import pytest_run

    own = config.stash.get(_PROXY_KEY, None)
    if own is not None:
        own.stop()
        if own.signal is not None:  # SIGTERM or SIGHUP ended the session
            session.exitstatus = 128 + own.signal
        if hasattr(config, "workerinput"):
            raw = pytest_run.worker_output(own)
            if raw is not None:
                config.workeroutput["cassette_summary"] = raw  # type: ignore[attr-defined]
            return  # the controller judges the whole run
    summary = pytest_run.combined(own, config.stash.get(_WORKER_SUMMARIES, []))
    if summary is None or session.exitstatus != pytest.ExitCode.OK:
        return
    if pytest_run.run_failed(summary, mode) is not None:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)  # an xdist hook: absent without xdist
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: collect each worker's summary."""
    raw = getattr(node, "workeroutput", {}).get("cassette_summary")
    if raw:
        from proxy_addon.runner import pytest_run

        node.config.stash.setdefault(_WORKER_SUMMARIES, []).append(pytest_run.worker_summary(raw))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if config.getoption("--cassette-mode") is None:
        return
    from proxy_addon.runner import pytest_run

    own = config.stash.get(_PROXY_KEY, None)
    summary = pytest_run.combined(own, config.stash.get(_WORKER_SUMMARIES, []))
    pytest_run.report(terminalreporter, config, summary, exitstatus)
