"""The frameworks users run, each in a small app (``tests/apps``) that makes all its calls in one
process: recorded through ``cassette run`` against the local stand-in, then replayed with the
stand-in stopped (its port held by a listener counting connections), with no key and no
framework-specific variable in the environment, then replayed with a changed prompt.

What the frameworks send besides the model call (LiteLLM's price map at import, the Agents
SDK's traces at exit) goes to its real host through HTTPS_PROXY: never recorded, answered by
the built-in incidental list in the replay."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CASSETTE, counted
from tests.upstream import FakeUpstreamServer, PortWatch

APPS = Path(__file__).parent / "apps"
# What a user's shell may hold that would make a framework behave unlike a bare setup: keys,
# and the frameworks' own switches for their incidental requests.
KEY_VARIABLE = re.compile(r"(_API_KEY|_AUTH_TOKEN)$")
FRAMEWORK_SWITCHES = (
    "LITELLM_LOCAL_MODEL_COST_MAP",
    "LITELLM_OFFLINE_MODE",
    "OPENAI_AGENTS_DISABLE_TRACING",
    "LANGSMITH_TRACING",
    "LANGCHAIN_TRACING_V2",
    "CI",
    "NO_PROXY",
    "no_proxy",
)
# A framework's own exception, as the last line of its traceback prints it.
EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*): (.*)$", re.MULTILINE)

# app -> (the lines it prints for the prompt "hello", its model calls, the incidental requests
# a replay answers: LiteLLM's price map, the Agents SDK's traces)
FRAMEWORKS = {
    "litellm": (
        [
            "sync: Answer 1 to: hello (sync)",
            "async: Answer 1 to: hello (async)",
            "stream: Answer 1 to: hello (stream)",
        ],
        3,
        1,
    ),
    "langchain": (["stream: Answer 1 to: hello"], 1, 0),
    "pydantic_ai": (["run_sync: Responses answer to: hello"], 1, 0),
    "openai_agents": (
        [
            "run_sync: Responses answer to: hello (sync)",
            "streamed: Responses answer to: hello (streamed)",
        ],
        2,
        1,
    ),
}


def bare_environment(upstream: FakeUpstreamServer) -> dict[str, str]:
    """This process's environment without any key or framework switch, the OpenAI base URL
    pointing at the stand-in (as a user's points at a local model server)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not KEY_VARIABLE.search(k) and k not in FRAMEWORK_SWITCHES
    }
    return {**env, "OPENAI_BASE_URL": upstream.base_url + "/v1"}


def cassette_run(mode: str, cassettes: Path, app: str, prompt: str, env: dict[str, str]):
    return subprocess.run(
        [CASSETTE, "run", "--mode", mode, "--dir", str(cassettes), "--"]
        + [sys.executable, str(APPS / f"{app}_app.py"), prompt],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
@pytest.mark.parametrize("app", FRAMEWORKS)
def test_a_framework_app_replays_with_no_key_and_a_changed_prompt_reads_as_a_miss(
    app: str, tmp_path: Path
) -> None:
    expected, calls, incidental = FRAMEWORKS[app]
    cassettes = tmp_path / "cassettes"
    upstream = FakeUpstreamServer().start()
    env = bare_environment(upstream)
    recorded = cassette_run(
        "record", cassettes, app, "hello", env | {"OPENAI_API_KEY": "sk-test-frameworks-0001"}
    )
    upstream.stop()
    assert recorded.returncode == 0, recorded.stderr
    assert recorded.stdout.splitlines() == expected, recorded.stderr
    assert counted(recorded.stderr, "recorded", "misses") == (calls, 0)
    # only the model calls are recorded: the incidental requests were forwarded (and failed:
    # no network here), never recorded
    files = sorted(cassettes.rglob("*.json"))
    assert len(files) == calls
    assert {f.relative_to(cassettes).parts[0] for f in files} == {
        f"127.0.0.1_{upstream.server_address[1]}"
    }

    watch = PortWatch(upstream.server_address[1])
    try:
        replayed = cassette_run("replay", cassettes, app, "hello", env)
        missed = cassette_run("replay", cassettes, app, "goodbye", env)
    finally:
        watch.close()
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout == recorded.stdout
    counts = counted(replayed.stderr, "hits", "misses", "refused", "incidental")
    assert counts[:3] == (calls, 0, 0), replayed.stderr
    at_least_once = app == "openai_agents"  # its exporter also posts every 5 s
    assert counts[3] >= incidental if at_least_once else counts[3] == incidental, replayed.stderr
    assert "no key was set for OPENAI_API_KEY" in replayed.stderr  # the placeholder said so
    assert watch.connections == 0

    assert missed.returncode == 1, missed.stderr
    assert counted(missed.stderr, "misses")[0] == 1  # nothing retried it
    # the framework's own exception shows the cassette message, and nothing reads as "not found"
    raised = [
        (cls, text)
        for cls, text in EXCEPTION_LINE.findall(missed.stderr)
        if "cassette miss: " in text
    ]
    assert raised, missed.stderr
    for cls, text in raised:
        assert "NotFound" not in cls and "not found" not in text.lower(), (cls, text)
    # the nearest recording named is the one of the same call, the prompt alone changed
    [message] = [line for line in missed.stderr.splitlines() if line.startswith("cassette miss:")]
    nearest = Path(message.split("Nearest recording: ")[1].split(", which differs at")[0])
    first_call = expected[0].split(" to: ", 1)[1]  # its prompt, as the stand-in echoed it
    assert first_call in json.dumps(json.loads(nearest.read_text())["request"]["body"])
