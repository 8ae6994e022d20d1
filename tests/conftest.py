"""Shared fixtures: real mitmdump processes, real local upstreams, the real openai SDK."""

from __future__ import annotations

import os
import re
import shutil
import sys
import tarfile
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from proxy_addon.runner.process import START_TIMEOUT_ENV, RunningProxy, start_proxy
from proxy_addon.runner.supervise import GRACE_ENV
from tests.upstream import FakeUpstreamServer, make_certificate

# The environment the tool reads to change what it does, as a CI machine may set it: CI=true
# makes a replay no request reached fail, GitHub's variables send reports to the job's page.
# Every test starts without them, whatever machine runs it; a test that means one sets it.
AMBIENT = ("CI", "GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY", "CASSETTE_DIR")
AMBIENT += (START_TIMEOUT_ENV, GRACE_ENV)
for _name in AMBIENT:
    os.environ.pop(_name, None)

TESTS = Path(__file__).resolve().parent
# Given to every pytest the tests start (a project's session with the plugin, a README recipe):
# two plugins of this suite's test extras that none of those sessions uses and a user's project
# would not have, langsmith's (LangChain's) and hypothesis's, import 1.9 s of modules into each
# process (a bare session: 2.4 s of CPU, 0.55 s without them), and the tests start dozens.
UNUSED_PLUGINS = ("-p", "no:langsmith_plugin", "-p", "no:hypothesispytest")
# The checkout these tests come from: its README, scripts and bundled cassettes. scripts/test
# runs the tests inside it, against its own package (installed editable); scripts/test --wheel
# (CI) copies them out of it, beside a wheel installed in a venv of its own, and names it in
# CASSETTE_CHECKOUT.
ROOT = Path(os.environ.get("CASSETTE_CHECKOUT") or TESTS.parent).resolve()
# Whether these tests run from a copy outside the checkout, against an installed package.
TESTS_COPIED_OUT = not TESTS.is_relative_to(ROOT)
FIXTURE_ROOT = TESTS / "fixtures"
SEED = FIXTURE_ROOT / "llama-stack-recording-chat-stream.json"
FIXTURES = FIXTURE_ROOT / "llama-stack"
SUITE_ARCHIVE = FIXTURE_ROOT / "llama-stack-suite.tar.xz"

FAKE_KEY = "sk-test-cassette-0123456789abcdef"
# Test-only addons loaded beside ours in a real mitmdump (see each file).
TEST_ADDONS = TESTS / "addons"
FAULTS = TEST_ADDONS / "faults.py"  # the test-only addon that injects faults (its docstring)
CASSETTE = str(Path(sys.executable).with_name("cassette"))  # the CLI of this venv


@pytest.fixture(scope="session")
def checkout() -> Path:
    """The checkout, for the tests that run its scripts or read its README and cassettes."""
    missing = [p for p in ("README.md", "scripts", "cassettes") if not (ROOT / p).exists()]
    assert not missing, (
        f"{ROOT} is not the project's checkout (no {', '.join(missing)}): tests copied out "
        "of it need CASSETTE_CHECKOUT=<the checkout>, as scripts/test --wheel sets"
    )
    return ROOT


@pytest.fixture(scope="session")
def confdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One mitmproxy CA for the session: generating it costs a second per start."""
    return tmp_path_factory.mktemp("mitmproxy-conf")


@pytest.fixture(scope="session")
def llama_suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """llama-stack's Responses-suite corpus (1,584 recordings, 54 MB), unpacked once per session
    from the 1.3 MB archive in tests/fixtures."""
    target = tmp_path_factory.mktemp("corpus")
    with tarfile.open(SUITE_ARCHIVE) as archive:
        archive.extractall(target, filter="data")
    suite = target / "llama-stack-suite"
    assert len(list(suite.glob("*/*.json"))) == 1584, "the corpus archive is incomplete"
    return suite


@pytest.fixture(scope="session")
def upstream_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("upstream-tls"))


@pytest.fixture(params=["http", "https"])
def upstream(request: pytest.FixtureRequest, upstream_cert) -> Iterator[FakeUpstreamServer]:
    """A fake provider, over plain HTTP and over HTTPS with its own certificate."""
    server = FakeUpstreamServer(upstream_cert if request.param == "https" else None).start()
    yield server
    server.stop()


@pytest.fixture
def http_upstream() -> Iterator[FakeUpstreamServer]:
    server = FakeUpstreamServer().start()
    yield server
    server.stop()


@pytest.fixture
def proxies(confdir: Path) -> Iterator[Callable[..., RunningProxy]]:
    """Start mitmdump processes; all are stopped at the end of the test."""
    started: list[RunningProxy] = []

    def start(
        cassette_dir: Path,
        mode: str = "replay",
        extra_scripts: tuple[Path, ...] = (),
        listeners: Mapping[str, int | None] | None = None,  # provider name -> port (None: free)
        **options: str,
    ) -> RunningProxy:
        opts = {"ssl_insecure": "true", **options}
        proxy = start_proxy(
            cassette_dir,
            mode,
            confdir=confdir,
            options=opts,
            extra_scripts=extra_scripts,
            listeners=listeners,
        )
        started.append(proxy)
        return proxy

    yield start
    for p in started:
        p.stop()


def openai_client(proxy: RunningProxy, upstream: FakeUpstreamServer):
    """The real openai SDK, pointed at the fake upstream through the proxy."""
    import openai

    return openai.OpenAI(
        api_key=FAKE_KEY,
        base_url=upstream.base_url + "/v1",
        max_retries=0,
        timeout=20,
        http_client=sdk_http_client(proxy),
    )


def sdk_http_client(proxy: RunningProxy):
    """The SDK's own HTTP client, through the proxy, trusting the proxy's CA."""
    import ssl

    import openai

    return openai.DefaultHttpxClient(
        proxy=proxy.url, verify=ssl.create_default_context(cafile=str(proxy.ca_cert))
    )


@pytest.fixture
def seed_dir(tmp_path: Path) -> Path:
    d = tmp_path / "cassettes"
    d.mkdir()
    shutil.copy(SEED, d / SEED.name)
    return d


def record_prompts(proxies, cassettes: Path, upstream: FakeUpstreamServer, *prompts: str) -> None:
    """Record one plain chat completion per prompt into ``cassettes``, then stop that proxy."""
    proxy = proxies(cassettes, "record")
    client = openai_client(proxy, upstream)
    for prompt in prompts:
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": prompt}]
        )
    proxy.stop()


def age_by(path: Path, days: int) -> None:
    """Rewrite every response's recorded_at in a cassette file ``days`` back from now, as an
    old file has it (plain JSON, not the proxy's own reader or writer)."""
    doc = orjson.loads(path.read_bytes())
    when = (datetime.now(UTC) - timedelta(days=days)).isoformat(timespec="seconds")
    for resp in doc["responses"]:
        resp["recorded_at"] = when
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))


def gzip_bomb(compressed_mb: int) -> bytes:
    """About ``compressed_mb`` MB of gzip that would expand a thousandfold: one MB of zeros
    compressed, then the same flushed block repeated (no trailer: a bomb need not end well)."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"\0" * (1 << 20)
    head = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    return head + again * (compressed_mb * (1 << 20) // len(again))


_SUMMARY = re.compile(r"cassette summary: ([^\n]*)")
# Each item of the summary line by the start of its wording.
_ITEMS = {
    "hits": "hits",
    "recorded": "recorded",
    "misses": "misses",
    "unused recordings": "unused",
    "requests passed through": "requests",
    "not saved (the client": "abandoned",
    "not saved (the upstream": "upstream_failed",
    "could not be written": "write_errors",
    "internal errors": "internal_errors",
    "upstream connections refused": "refused",
    "answered from stale": "stale",
    "refused as stale": "stale_refused",
    "answered from another host": "other_host",
    "answered after normalising": "normalised",
    "incidental requests": "incidental",
}


def summary_counts(text: str) -> dict[str, int]:
    """Every count of the last summary line in ``text`` (a proxy's log, a command's stderr),
    read from its wording, those it leaves out at 0 (``recordings``: the N of "(of N)"): so a
    check of "0 misses" cannot pass on "10 misses", nor one of "no internal errors" on a
    reworded line."""
    found = _SUMMARY.findall(text)
    assert found, f"no summary line in:\n{text[-2000:]}"
    counts = dict.fromkeys([*_ITEMS.values(), "recordings"], 0)
    for item in found[-1].split(", "):
        m = re.fullmatch(r"(\d+) (.+?)(?: \(of (\d+)\))?", item)
        assert m, f"unknown summary item: {item!r}"
        key = next((k for phrase, k in _ITEMS.items() if m.group(2).startswith(phrase)), None)
        assert key is not None, f"unknown summary item: {item!r}"
        counts[key] = int(m.group(1))
        if m.group(3) is not None:
            counts["recordings"] = int(m.group(3))
    return counts


def wait_until(condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    """Wait for an event the test cannot be called back on (a log line, a file), checking
    every 10 ms; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def counted(text: str, *names: str) -> tuple[int, ...]:
    """The named counts of the last summary line in ``text`` (see ``summary_counts``)."""
    counts = summary_counts(text)
    return tuple(counts[name] for name in names)
