"""Any client, any language: clients that ignore HTTPS_PROXY go through a base-URL listener per
provider. Real `cassette run` processes, the official Node SDKs (installed offline from the
tarballs in tests/fixtures/node into a cached folder by the test), the openai Python SDK, curl,
and a local stand-in provider that counts the requests it gets."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from proxy_addon.formats import load
from proxy_addon.store.layout import iter_cassette_files
from tests.conftest import CASSETTE, counted

NODE_APP = Path(__file__).with_name("node") / "app.mjs"
# The official Node SDKs and their dependencies, as npm packed them (tests/fixtures/SOURCES):
# installed offline from these files, so the suite needs no registry and a new release cannot
# change what it tests.
NODE_TARBALLS = sorted((Path(__file__).parent / "fixtures" / "node").glob("*.tgz"))


@pytest.fixture(scope="session")
def node_sdks() -> Path:
    """The official Node SDKs' ``node_modules``, installed offline from the tarballs in
    tests/fixtures/node once and cached between runs (outside the clone, as pip's cache is;
    keyed by the tarballs' names). Marked installed only after a whole install, and installed
    under a lock, so an interrupted or concurrent run never leaves half of one."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: the Node tests need Node.js 20+ and npm")
    assert len(NODE_TARBALLS) == 9, "tests/fixtures/node must hold the 9 packed packages"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    key = hashlib.sha256("\n".join(p.name for p in NODE_TARBALLS).encode()).hexdigest()[:12]
    folder = cache / "llm-cassette-proxy" / f"node-sdks-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / ".installed").exists():
            shutil.rmtree(folder / "node_modules", ignore_errors=True)
            (folder / "package.json").write_text('{"private": true, "type": "module"}\n')
            done = subprocess.run(
                # --offline with an empty cache: every package must come from the tarballs
                [
                    "npm",
                    "install",
                    "--offline",
                    "--cache",
                    str(folder / ".npm-cache"),
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                    *map(str, NODE_TARBALLS),
                ],
                cwd=folder,
                capture_output=True,
                text=True,
                timeout=300,
            )
            if done.returncode != 0:
                pytest.fail(
                    f"npm install of tests/fixtures/node/*.tgz failed in {folder}:\n"
                    f"{done.stdout}\n{done.stderr}"
                )
            (folder / ".installed").touch()
    return folder / "node_modules"


@pytest.fixture
def node_app(tmp_path: Path, node_sdks: Path) -> Path:
    """The test's own folder with ``app.mjs`` and the cached SDKs beside it."""
    folder = tmp_path / "node-app"
    folder.mkdir()
    shutil.copy(NODE_APP, folder / "app.mjs")
    (folder / "node_modules").symlink_to(node_sdks)
    return folder


def cassette_run(
    mode: str, cassettes: Path, command: list[str], env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CASSETTE, "run", "--mode", mode, "--dir", str(cassettes), "--", *command],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def stand_in_env(upstream, **more: str) -> dict[str, str]:
    """The user's environment: the SDKs' base URLs point at the local stand-in provider."""
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "NO_PROXY", "no_proxy")}
    return {
        **env,
        "OPENAI_BASE_URL": upstream.base_url + "/v1",
        "ANTHROPIC_BASE_URL": upstream.base_url,
        "OPENAI_API_KEY": "sk-test-any-client",
        "ANTHROPIC_API_KEY": "sk-ant-test-any-client",
        **more,
    }


def test_node_sdks_record_then_replay_through_their_base_url(tmp_path, http_upstream, node_app):
    """The official `openai` and `@anthropic-ai/sdk` Node packages ignore HTTPS_PROXY: through
    the listeners a streamed chat, a plain chat and an Anthropic message are recorded, then
    replayed with identical output and no request reaching the stand-in."""
    cassettes = tmp_path / "cassettes"
    env = stand_in_env(http_upstream)
    recorded = cassette_run("record", cassettes, ["node", "app.mjs"], env, cwd=node_app)
    assert recorded.returncode == 0, recorded.stderr
    assert recorded.stdout.splitlines() == [
        "stream: Answer 1 to: streamed from node",
        "plain: Answer 1 to: plain from node",
        "anthropic: Claude says: hello from node",
    ]
    assert counted(recorded.stderr, "hits", "recorded", "misses") == (0, 3, 0)
    assert http_upstream.state.hits == 3
    replayed = cassette_run("replay", cassettes, ["node", "app.mjs"], env, cwd=node_app)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout == recorded.stdout
    assert counted(replayed.stderr, "hits", "recorded", "misses") == (3, 0, 0)
    assert http_upstream.state.hits == 3  # nothing reached the stand-in


KEY_NAMES = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "GOOGLE_API_KEY",
    "GEMINI_API_KEY",
    "GROQ_API_KEY",
    "CO_API_KEY",
    "AZURE_OPENAI_API_KEY",
    "MISTRAL_API_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
)
SHOW_KEYS = f"import os\nfor n in {KEY_NAMES!r}:\n    print(n, os.environ.get(n))\n"


def test_a_replay_gives_a_placeholder_to_each_provider_without_a_key(tmp_path):
    """SDKs refuse to start without a key: a replay sets a placeholder for each provider that
    has none (any one of its variables set is enough) and says so; a record sets none."""
    cassettes = tmp_path / "cassettes"
    cassettes.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith(("_API_KEY", "_AUTH_TOKEN", "_AD_TOKEN"))
        and not k.startswith("AWS_")  # no AWS credential source either
        and k != "CI"
    }
    env |= {"ANTHROPIC_AUTH_TOKEN": "user-anthropic-token", "GEMINI_API_KEY": "user-gemini"}
    command = [sys.executable, "-c", SHOW_KEYS]
    replayed = cassette_run("replay", cassettes, command, env)
    assert replayed.returncode == 0, replayed.stderr
    placeholder = "sk-cassette-replay-placeholder"
    assert replayed.stdout.splitlines() == [
        f"OPENAI_API_KEY {placeholder}",
        "ANTHROPIC_API_KEY None",
        "ANTHROPIC_AUTH_TOKEN user-anthropic-token",
        "GOOGLE_API_KEY None",
        "GEMINI_API_KEY user-gemini",
        f"GROQ_API_KEY {placeholder}",
        f"CO_API_KEY {placeholder}",
        f"AZURE_OPENAI_API_KEY {placeholder}",
        f"MISTRAL_API_KEY {placeholder}",
        f"AWS_ACCESS_KEY_ID {placeholder}",  # both halves of a key pair
        f"AWS_SECRET_ACCESS_KEY {placeholder}",
    ]
    assert (
        "cassette: replay: no key was set for OPENAI_API_KEY, GROQ_API_KEY, CO_API_KEY, "
        "AZURE_OPENAI_API_KEY, MISTRAL_API_KEY, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY; the "
        f"command got the placeholder '{placeholder}'" in replayed.stderr
    )
    recorded = cassette_run("record", cassettes, command, env)
    assert recorded.returncode == 0, recorded.stderr
    assert placeholder not in recorded.stdout + recorded.stderr
    assert "OPENAI_API_KEY None" in recorded.stdout.splitlines()


MIXED_APP = """
import os, sys, anthropic, httpx
upstream, user, trace, prompt, again = sys.argv[1:6]
print("NO_PROXY", os.environ.get("NO_PROXY"), os.environ.get("no_proxy"))
chat = {"model": "gpt-4o", "user": user, "metadata": {"trace": trace}}
asked = [{"role": "user", "content": prompt}]
r = httpx.post(upstream + "/v1/chat/completions", json=chat | {"messages": asked})
print("chat", r.status_code, r.json()["choices"][0]["message"]["content"])
client = anthropic.Anthropic(base_url=upstream, max_retries=0)
hi = [{"role": "user", "content": "hi"}]
m = client.messages.create(model="claude-sonnet-4-5", max_tokens=16, messages=hi)
print("anthropic", m.content[0].text)
for _ in range(int(again)):  # one request never recorded, sent again as a framework's retries do
    r = httpx.post(upstream + "/v1/chat/completions", json=chat | {"messages": []})
    print("miss", r.status_code)
"""


def test_a_replay_with_no_key_ignores_both_paths_given_and_counts_a_repeated_miss(
    tmp_path, http_upstream
):
    """One recording, one replay, each through ``cassette run`` with the user's ``NO_PROXY``
    naming the stand-in's host: cleared, so both go through the proxy. The replay runs with no
    key at all (the Anthropic SDK gets the placeholder and sends), asks the chat with other
    ``user`` and ``metadata.trace`` values (``--set cassette_ignore`` given twice keeps both
    paths: a hit), and one request never recorded twice (its message once, "(2 times)")."""
    app = tmp_path / "app.py"
    app.write_text(MIXED_APP)
    cassettes = tmp_path / "cassettes"
    bypass = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    base = [sys.executable, str(app), http_upstream.base_url]
    recorded = cassette_run(
        "record", cassettes, [*base, "u1", "t1", "hello", "0"], stand_in_env(http_upstream) | bypass
    )
    assert recorded.returncode == 0, recorded.stderr
    assert recorded.stdout.splitlines()[0] == "NO_PROXY None None"
    assert counted(recorded.stderr, "recorded") == (2,)
    asked = http_upstream.state.hits

    no_key = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith(("_API_KEY", "_AUTH_TOKEN")) and k != "CI"
    }
    replayed = subprocess.run(
        [CASSETTE, "run", "--dir", str(cassettes), "--set", "cassette_ignore=user"]
        + ["--set", "cassette_ignore=metadata.trace", "--", *base, "u2", "t2", "hello", "2"],
        env=no_key | bypass,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert replayed.stdout.splitlines() == [
        "NO_PROXY None None",
        recorded.stdout.splitlines()[1],  # the chat, a hit whatever its user and trace
        recorded.stdout.splitlines()[2],  # the Anthropic message, sent with the placeholder
        "miss 424",
        "miss 424",
    ], replayed.stderr
    assert counted(replayed.stderr, "hits", "misses") == (2, 2)
    assert http_upstream.state.hits == asked
    assert "no key was set for OPENAI_API_KEY, ANTHROPIC_API_KEY," in replayed.stderr
    repeated = [line for line in replayed.stderr.splitlines() if line.endswith("(2 times)")]
    assert len(repeated) == 1 and "cassette miss" in replayed.stderr, replayed.stderr
    assert replayed.stderr.count("cassette miss: ") == 1, replayed.stderr
    assert replayed.returncode == 1
    assert replayed.stderr.splitlines()[-1] == "cassette: the run fails: 2 replay misses"


PY_APP = """
import sys, openai
route, upstream, prompt = sys.argv[1:4]
if route == "proxy":      # HTTPS_PROXY only: an explicit base URL, the proxy from the environment
    client = openai.OpenAI(base_url=upstream + "/v1", max_retries=0)
elif route == "base-url":  # the base-URL variable only: no proxy at all
    client = openai.OpenAI(max_retries=0, http_client=openai.DefaultHttpxClient(trust_env=False))
else:                      # both: OPENAI_BASE_URL, and HTTP_PROXY for it
    client = openai.OpenAI(max_retries=0)
r = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": prompt}])
print(r.choices[0].message.content)
"""


@pytest.fixture
def py_app(tmp_path: Path) -> Path:
    app = tmp_path / "app.py"
    app.write_text(PY_APP)
    return app


def test_a_client_reading_both_variables_is_recorded_once(tmp_path, http_upstream, py_app):
    cassettes = tmp_path / "cassettes"
    env = stand_in_env(http_upstream)
    result = cassette_run(
        "record",
        cassettes,
        [sys.executable, str(py_app), "both", http_upstream.base_url, "once"],
        env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Answer 1 to: once"
    assert counted(result.stderr, "hits", "recorded", "misses") == (0, 1, 0)
    [path] = list(iter_cassette_files(cassettes))
    rec = load(path)
    assert len(rec.responses) == 1
    assert rec.request.url == http_upstream.base_url + "/v1/chat/completions"  # the real host
    assert http_upstream.state.hits == 1


@pytest.mark.parametrize(
    "record_route, replay_route", [("proxy", "base-url"), ("base-url", "proxy")]
)
def test_one_cassette_whichever_route(tmp_path, http_upstream, py_app, record_route, replay_route):
    cassettes = tmp_path / "cassettes"
    env = stand_in_env(http_upstream)
    app = [sys.executable, str(py_app)]
    recorded = cassette_run(
        "record", cassettes, [*app, record_route, http_upstream.base_url, "route"], env
    )
    assert recorded.returncode == 0, recorded.stderr
    assert counted(recorded.stderr, "hits", "recorded", "misses") == (0, 1, 0)
    replayed = cassette_run(
        "replay", cassettes, [*app, replay_route, http_upstream.base_url, "route"], env
    )
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout == recorded.stdout == "Answer 1 to: route\n"
    assert counted(replayed.stderr, "hits", "recorded", "misses") == (1, 0, 0)
    assert http_upstream.state.hits == 1


def test_curl_through_a_listener_needs_no_ca(tmp_path, http_upstream):
    """Recorded with curl through the listener, replayed with curl and no CA or proxy variable
    at all: plain HTTP to 127.0.0.1."""
    cassettes = tmp_path / "cassettes"
    env = stand_in_env(http_upstream)
    curl = [
        "sh",
        "-c",
        "env -u SSL_CERT_FILE -u CURL_CA_BUNDLE -u REQUESTS_CA_BUNDLE "
        "-u HTTPS_PROXY -u HTTP_PROXY -u https_proxy -u http_proxy "
        'curl -sS --fail "$OPENAI_BASE_URL/models"',
    ]
    recorded = cassette_run("record", cassettes, curl, env)
    assert recorded.returncode == 0, recorded.stderr
    replayed = cassette_run("replay", cassettes, curl, env)
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout) == json.loads(recorded.stdout)
    assert [m["id"] for m in json.loads(replayed.stdout)["data"]] == [
        "gpt-4o",
        "text-embedding-3-small",
    ]
    assert counted(replayed.stderr, "hits", "misses") == (1, 0)
    assert http_upstream.state.hits == 1


def test_a_run_that_no_request_reached_says_so_and_fails_on_ci(tmp_path, proxies):
    cassettes = tmp_path / "cassettes"
    cassettes.mkdir()
    plain = proxies(cassettes, "replay").stop()  # mitmdump as the README runs it, then stopped
    assert "cassette: warning: no request reached the proxy" in plain
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    quiet = cassette_run("replay", cassettes, ["true"], env)
    assert quiet.returncode == 0
    assert (
        "no request reached the proxy: does the client read HTTPS_PROXY or a base-URL "
        "variable such as OPENAI_BASE_URL?" in quiet.stderr
    )
    on_ci = cassette_run("replay", cassettes, ["true"], {**env, "CI": "true"})
    assert on_ci.returncode == 1 and "no request reached the proxy" in on_ci.stderr
    # the last line says why it failed
    assert on_ci.stderr.splitlines()[-1] == (
        "cassette: the run fails: no request reached the proxy (replay mode with CI=true)"
    )
    recording = cassette_run("record", cassettes, ["true"], {**env, "CI": "true"})
    assert recording.returncode == 0 and "no request reached the proxy" in recording.stderr
