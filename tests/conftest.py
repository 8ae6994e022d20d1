"""Shared fixtures: real mitmdump processes, real local upstreams, the real openai SDK."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Iterator

import pytest

from proxy_addon.process import RunningProxy, start_proxy
from tests.upstream import FakeUpstreamServer, make_certificate

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SEED = SHARED / "seeds" / "llama-stack-recording-chat-stream.json"
FIXTURES = SHARED / "fixtures" / "llama-stack"

FAKE_KEY = "sk-test-cassette-0123456789abcdef"


@pytest.fixture(scope="session")
def confdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One mitmproxy CA for the session: generating it costs a second per start."""
    return tmp_path_factory.mktemp("mitmproxy-conf")


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

    def start(cassette_dir: Path, mode: str = "replay", **options: str) -> RunningProxy:
        opts = {"ssl_insecure": "true", **options}
        proxy = start_proxy(cassette_dir, mode, confdir=confdir, options=opts)
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
        proxy=proxy.url, verify=ssl.create_default_context(cafile=str(proxy.ca_cert)))


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
        client.chat.completions.create(model="gpt-4o",
                                       messages=[{"role": "user", "content": prompt}])
    proxy.stop()
