"""The README's recipes, run as a user runs them, so the README and the package cannot drift apart.

Each block after ``<!-- run by tests/test_readme.py: NAME -->`` is run by bash as it is written,
from a temporary folder outside the checkout: the installed package's commands first on PATH
(in CI, those of the wheel .ci/run installed), HOME a temporary folder (so ~/.mitmproxy is the
test's own), a local stand-in for the provider where a recipe records, fake keys. The one change
to a block's text: mitmproxy's port 8080 becomes a free port (the suite runs beside other
processes), which mitmdump reads from ~/.mitmproxy/config.yaml. Every shell block of the README
is marked, run or not run with the reason, and every recipe named here is still in it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from proxy_addon.runner.process import free_ports
from tests.conftest import UNUSED_PLUGINS, summary_counts
from tests.upstream import FakeUpstreamServer

FAKE_KEY = "sk-test-readme-0123456789abcdef"
# A marker and the block after it: run or not, the name or the reason, the language, the text.
_MARKED = re.compile(
    r"^<!-- (run|not run) by tests/test_readme\.py: (.*?) -->\n```(\w*)\n(.*?)^```$", re.M | re.S
)
_SUMMARY = re.compile(r"cassette summary: [^\n]*")

# The app of the joke recipes: the plain openai SDK, default base URL, streaming the joke
# recorded in the bundled cassettes/.
JOKE_TEST = """
import openai


def test_joke():
    client = openai.OpenAI(api_key="sk-test-readme-joke", max_retries=0)
    stream = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Tell me a joke"}], stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text.endswith("They don't have the guts!")
"""
# The same call from Node's fetch, which reads no proxy variable: only OPENAI_BASE_URL.
JOKE_NODE = """
const base = process.env.OPENAI_BASE_URL ?? "https://api.openai.com/v1";
const res = await fetch(`${base}/chat/completions`, {
  method: "POST",
  headers: { "content-type": "application/json", authorization: "Bearer sk-test-readme-node" },
  body: JSON.stringify({
    model: "gpt-4o", messages: [{ role: "user", content: "Tell me a joke" }], stream: true,
  }),
});
if (!res.ok) { console.error(res.status, await res.text()); process.exit(1); }
let text = "";
for (const line of (await res.text()).split("\\n")) {
  if (line.startsWith("data: {")) text += JSON.parse(line.slice(6)).choices[0].delta.content ?? "";
}
console.log(`node: ${JSON.stringify(text)}`);
"""
# A recording app: one chat call to the provider (here the stand-in), key from the environment.
RECORD_APP = """
import os

import openai

client = openai.OpenAI(base_url=os.environ["PROVIDER_URL"] + "/v1", max_retries=0)
answer = client.chat.completions.create(
    model="gpt-4o", messages=[{"role": "user", "content": "Tell me a joke"}]
)
print(answer.choices[0].message.content)
"""
PLUGIN_TEST = """
import openai


def test_joke():
    client = openai.OpenAI(api_key="sk-test-readme-plugin", max_retries=0)
    answer = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Tell me a joke"}]
    )
    assert answer.choices[0].message.content == "Answer 1 to: Tell me a joke"
"""
# Variables of this process a user's shell would not have.
_NOT_THE_USERS = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "SSL_CERT_FILE",
                  "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "CASSETTE_DIR",
                  "OPENAI_BASE_URL", "OPENAI_API_KEY", "PRE_COMMIT_HOME")  # fmt: skip


def marked_blocks(readme: str) -> list[tuple[str, str, str, str]]:
    """(run or not run, name or reason, language, text) of every marked block."""
    return _MARKED.findall(readme)


@pytest.fixture(scope="module")
def readme(checkout: Path) -> str:
    return (checkout / "README.md").read_text()


def recipe(readme: str, name: str) -> str:
    found = [text for run, what, _, text in marked_blocks(readme) if run == "run" and what == name]
    assert len(found) == 1, f"README.md has {len(found)} blocks marked as recipe {name!r}"
    return found[0]


@dataclass
class Ran:
    code: int
    output: str

    def summaries(self) -> list[dict[str, int]]:
        """Every summary line's counts, in order."""
        return [summary_counts(line) for line in _SUMMARY.findall(self.output)]


class Shell:
    """A bash script of a recipe, in its own process group like a terminal's job: ``stop``
    sends SIGINT to the group (Ctrl-C, or what is left in the background once the script
    ended) and waits until every process in it has closed the output."""

    def __init__(self, script: str, cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            ["bash", "-c", script],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.listening = False
        self._ready = threading.Event()  # listening, or the output ended
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if "proxy listening at" in line:
                self.listening = True
                self._ready.set()
        self._ready.set()

    def wait_listening(self) -> None:
        self._ready.wait(60)
        assert self.listening, "the proxy did not listen:\n" + "".join(self.lines)

    def stop(self, timeout: float = 120) -> Ran:
        with contextlib.suppress(subprocess.TimeoutExpired):  # a foreground proxy: Ctrl-C
            self.proc.wait(timeout)
        with contextlib.suppress(ProcessLookupError):  # nothing was left running
            os.killpg(self.proc.pid, signal.SIGINT)
        self._reader.join(60)
        assert not self._reader.is_alive(), "still running after Ctrl-C:\n" + "".join(self.lines)
        return Ran(self.proc.wait(10), "".join(self.lines))


@dataclass
class User:
    """A user's machine: a project folder, a home of its own, the installed commands."""

    home: Path
    project: Path
    port: int
    env: dict[str, str]
    shells: list[Shell] = field(default_factory=list)

    def mitmproxy_config(self, **options: object) -> None:
        """~/.mitmproxy/config.yaml: the free port instead of 8080, and ``options``."""
        confdir = self.home / ".mitmproxy"
        confdir.mkdir(exist_ok=True)
        lines = [f"{k}: {json.dumps(v)}" for k, v in {"listen_port": self.port, **options}.items()]
        (confdir / "config.yaml").write_text("\n".join(lines) + "\n")

    def script(self, text: str) -> str:
        return text.replace("8080", str(self.port))

    def start(self, text: str) -> Shell:
        self.shells.append(Shell(self.script(text), self.project, self.env))
        return self.shells[-1]

    def run(self, text: str, timeout: float = 120) -> Ran:
        return self.start(text).stop(timeout)

    def joke_project(self, checkout: Path) -> None:
        """The bundled cassettes/ and a test that streams their joke."""
        shutil.copytree(checkout / "cassettes", self.project / "cassettes")
        (self.project / "test_joke.py").write_text(JOKE_TEST)


@pytest.fixture
def user(tmp_path: Path) -> Iterator[User]:
    home, project = tmp_path / "home", tmp_path / "project"
    home.mkdir()
    project.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k.upper() not in _NOT_THE_USERS and not k.startswith("PYTEST_")
    }
    # the environment the package is installed in comes first, as when it is activated
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["HOME"] = str(home)
    env["PYTEST_ADDOPTS"] = " ".join(UNUSED_PLUGINS)  # this suite's extras, not the user's
    u = User(home, project, free_ports(1)[0], env)
    u.mitmproxy_config()
    yield u
    for shell in u.shells:  # a test that failed half-way leaves nothing running
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.proc.pid, signal.SIGKILL)


def test_every_shell_block_is_marked_and_every_recipe_is_still_there(readme):
    marked = marked_blocks(readme)
    shell_blocks = re.findall(r"^```sh$", readme, re.M)
    assert len(shell_blocks) == len([m for m in marked if m[2] == "sh"]), (
        "a shell block of README.md has no <!-- run by tests/test_readme.py: NAME --> or "
        "<!-- not run by tests/test_readme.py: WHY --> before it"
    )
    run = sorted(what for how, what, _, _ in marked if how == "run")
    assert run == sorted(RECIPES), "README.md's recipes and the ones tests/test_readme.py runs"


def test_intro_replays_the_joke_to_pytest_and_to_node(readme, user, checkout):
    user.joke_project(checkout)
    (user.project / "app.mjs").write_text(JOKE_NODE)
    ran = user.run(recipe(readme, "intro"))
    assert ran.code == 0, ran.output
    assert "1 passed" in ran.output
    assert "node: \"Why don't skeletons fight each other? \\n\\nThey don't have the guts!\"" in (
        ran.output
    )
    assert [(s["hits"], s["misses"]) for s in ran.summaries()] == [(1, 0), (1, 0)]


def test_record_with_plain_mitmdump_from_another_folder(readme, user, upstream_cert):
    """Two shells: the proxy in the foreground, the app in the other; then Ctrl-C."""
    provider = FakeUpstreamServer(upstream_cert).start()  # over TLS, as a provider is
    try:
        user.mitmproxy_config(ssl_verify_upstream_trusted_ca=str(upstream_cert[0]))
        user.env.update(OPENAI_API_KEY=FAKE_KEY, PROVIDER_URL=provider.base_url)
        (user.project / "my_app.py").write_text(RECORD_APP)
        proxy = user.start(recipe(readme, "record-proxy"))
        proxy.wait_listening()
        app = user.run(recipe(readme, "record-app"))
        stopped = proxy.stop(timeout=0)
    finally:
        provider.stop()
    assert app.code == 0, app.output + stopped.output
    assert app.output.strip().endswith("Answer 1 to: Tell me a joke")
    assert provider.state.hits == 1
    [counts] = stopped.summaries()
    assert (counts["recorded"], counts["hits"], counts["misses"]) == (1, 0, 0), stopped.output
    [file] = (user.project / "cassettes").rglob("*.json")
    assert file.relative_to(user.project / "cassettes").parts[:3] == (
        f"127.0.0.1_{provider.server_address[1]}",
        "v1",
        "chat",
    )
    assert FAKE_KEY not in file.read_text()
    assert FAKE_KEY not in stopped.output


def test_replay_in_ci_with_plain_mitmdump(readme, user, checkout):
    user.joke_project(checkout)
    ran = user.run(recipe(readme, "replay-ci"))
    assert ran.code == 0, ran.output
    assert "1 passed" in ran.output
    [counts] = ran.summaries()  # printed when the proxy left in the background is stopped
    assert (counts["hits"], counts["misses"], counts["recorded"]) == (1, 0, 0), ran.output


def test_pytest_plugin_records_then_replays(readme, user, http_upstream):
    user.env["OPENAI_BASE_URL"] = http_upstream.base_url + "/v1"
    (user.project / "test_app.py").write_text(PLUGIN_TEST)
    ran = user.run(recipe(readme, "pytest-plugin"))
    assert ran.code == 0, ran.output
    assert [(s["recorded"], s["hits"], s["misses"]) for s in ran.summaries()] == [
        (1, 0, 0),  # record
        (0, 1, 0),  # replay
        (0, 1, 0),  # auto: what exists is replayed
    ], ran.output
    assert http_upstream.state.hits == 1


def test_cassette_in_ci_runs_verifies_and_scrubs(readme, user, checkout):
    user.joke_project(checkout)
    ran = user.run(recipe(readme, "cassette-ci"))
    assert ran.code == 0, ran.output
    [counts] = ran.summaries()
    assert (counts["hits"], counts["misses"]) == (1, 0), ran.output
    assert "1 files checked, 0 bad" in ran.output
    assert "1 files checked: nothing to scrub" in ran.output


@pytest.mark.parametrize("name", ["normalize-dates", "refresh"])
def test_keeping_cassettes_valid_recipes_replay_the_joke(readme, user, checkout, name):
    """The bundled joke is a llama-stack recording: no date, so refresh replays it."""
    user.joke_project(checkout)
    ran = user.run(recipe(readme, name))
    assert ran.code == 0, ran.output
    expected = {"normalize-dates": 1, "refresh": 2}[name]
    assert [(s["hits"], s["misses"], s["recorded"]) for s in ran.summaries()] == [
        (1, 0, 0)
    ] * expected, ran.output


def _hooks_repository(checkout: Path, target: Path) -> str:
    """The checkout as pre-commit fetches it: its files (tracked and new, as `git ls-files`
    lists them; every file where the checkout is no git work tree) committed in a repository
    of their own, with what is not committed yet. Returns the commit."""
    if (checkout / ".git").exists():
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=checkout,
            capture_output=True,
            check=True,
        ).stdout
        files = [checkout / name for name in listed.decode().split("\0") if name]
    else:
        files = [p for p in checkout.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    for source in files:
        if source.is_file():  # a tracked file deleted in the work tree is not there
            destination = target / source.relative_to(checkout)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost"]
    subprocess.run([*git, "init", "-q"], cwd=target, check=True)
    subprocess.run([*git, "add", "-A"], cwd=target, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "hooks"], cwd=target, check=True)
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=target, capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.mark.slow
def test_pre_commit_hook_passes_clean_cassettes_and_fails_a_leaking_one(
    readme, user, checkout, tmp_path
):
    """The README's .pre-commit-config.yaml, run by pre-commit itself: it installs the package
    from the repository (language: python) in an environment of its own."""
    hooks = tmp_path / "hooks"
    rev = _hooks_repository(checkout, hooks)
    config = recipe(readme, "pre-commit")
    assert "<repository URL>" in config and "<tag or commit>" in config
    user.env["PRE_COMMIT_HOME"] = str(tmp_path / "pre-commit-home")
    user.env.pop("PYTHONPATH", None)  # the hook runs the package pre-commit installed, alone
    # pip's cache is the machine's, not in the fresh HOME: pre-commit's install reads no index
    # for what this machine has installed before
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    user.env.setdefault("PIP_CACHE_DIR", str(cache_home / "pip"))
    user.joke_project(checkout)
    (user.project / ".pre-commit-config.yaml").write_text(
        config.replace("<repository URL>", str(hooks)).replace("<tag or commit>", rev)
    )
    subprocess.run(["git", "init", "-q"], cwd=user.project, check=True)

    def pre_commit() -> Ran:
        subprocess.run(["git", "add", "-A"], cwd=user.project, check=True)
        return user.run("pre-commit run --all-files")

    clean = pre_commit()
    assert clean.code == 0, clean.output
    assert re.search(r"^cassette verify\.+Passed$", clean.output, re.M), clean.output

    bundled = next((user.project / "cassettes").rglob("*.json"))
    doc = json.loads(bundled.read_text())
    doc["request"]["body"]["messages"][0]["content"] = f"my key is {FAKE_KEY}"
    leak = user.project / "cassettes" / "leak.json"
    leak.write_text(json.dumps(doc, indent=2))
    leaking = pre_commit()
    assert leaking.code == 1, leaking.output
    assert re.search(r"^cassette verify\.+Failed$", leaking.output, re.M), leaking.output
    assert "leak.json" in leaking.output
    assert "2 files checked, 1 bad" in leaking.output
    assert FAKE_KEY not in leaking.output


RECIPES = {
    "intro": test_intro_replays_the_joke_to_pytest_and_to_node,
    "record-proxy": test_record_with_plain_mitmdump_from_another_folder,
    "record-app": test_record_with_plain_mitmdump_from_another_folder,
    "replay-ci": test_replay_in_ci_with_plain_mitmdump,
    "pytest-plugin": test_pytest_plugin_records_then_replays,
    "cassette-ci": test_cassette_in_ci_runs_verifies_and_scrubs,
    "pre-commit": test_pre_commit_hook_passes_clean_cassettes_and_fails_a_leaking_one,
    "normalize-dates": test_keeping_cassettes_valid_recipes_replay_the_joke,
    "refresh": test_keeping_cassettes_valid_recipes_replay_the_joke,
}
