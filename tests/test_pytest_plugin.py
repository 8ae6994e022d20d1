"""The pytest plugin, run with pytester on a small project that uses the real openai SDK
against a local upstream: recorded, replayed, with a miss, with xdist and with a marker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from proxy_addon import formats
from proxy_addon.formats import cassette
from proxy_addon.store.layout import BY_TEST_DIR, iter_cassette_files
from tests.conftest import UNUSED_PLUGINS, age_by, summary_counts

pytest_plugins = ["pytester"]

# The app under test: one chat call through the openai SDK to the local upstream.
ASK = """
import os, subprocess, sys
import openai, pytest

def ask(prompt):
    client = openai.OpenAI(api_key="sk-test-plugin", base_url=os.environ["FAKE_UPSTREAM"] + "/v1",
                           max_retries=0)
    return client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": prompt}]).choices[0].message.content
"""

PROJECT = (
    ASK
    + """
def test_joke():
    assert ask("joke") == "Answer 1 to: joke"

def test_twice():
    assert [ask("again"), ask("again")] == ["Answer 1 to: again", "Answer 2 to: again"]

@pytest.mark.cassette("greetings")
def test_marker_first():
    assert ask("hello").startswith("Answer")

@pytest.mark.cassette("greetings")
def test_marker_second():
    assert ask("hello").startswith("Answer")

def test_from_a_subprocess():
    code = "import sys; sys.path.insert(0, '.'); from test_app import ask; print(ask('child'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "Answer 1 to: child"
"""
)

SWALLOW = """
import os, openai

def test_swallows_the_error():
    client = openai.OpenAI(api_key="sk-test-plugin", base_url=os.environ["FAKE_UPSTREAM"] + "/v1",
                           max_retries=0)
    try:
        client.chat.completions.create(model="gpt-4o",
                                       messages=[{"role": "user", "content": "never recorded"}])
    except openai.APIStatusError:
        pass  # the application hides it; the plugin must not
"""


KEYS = ("sk-test-param-key-4001-abcdefgh", "fake-param-key-4002")
# Tests parametrised with the key they send (as a test of several providers' keys is)
KEYED = """
import os, openai, pytest

@pytest.mark.parametrize("key,prompt", [
    ("sk-test-param-key-4001-abcdefgh", "one"),  # shaped like a key
    ("fake-param-key-4002", "two"),  # known only as the key the request sends
])
def test_with_key(key, prompt):
    client = openai.OpenAI(api_key=key, base_url=os.environ["FAKE_UPSTREAM"] + "/v1",
                           max_retries=0)
    answer = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": prompt}]).choices[0].message.content
    assert answer == f"Answer 1 to: {prompt}"
"""


@pytest.fixture
def project(pytester: pytest.Pytester, http_upstream, monkeypatch) -> pytest.Pytester:
    monkeypatch.setenv("FAKE_UPSTREAM", http_upstream.base_url)
    pytester.makepyfile(test_app=PROJECT)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", *UNUSED_PLUGINS, *args, timeout=120
    )


def test_record_then_replay_per_test_cassettes(project, http_upstream):
    """Each test its own cassette, named after it; a test parametrised with the key it sends
    (``test_keyed.py``) is named with ``<redacted>`` in its directory and its ``test_id``, the
    same on every run, never with the key."""
    project.makepyfile(test_keyed=KEYED)
    cassettes = project.path / "cassettes"
    recorded = run(project, "--cassette-mode=record", f"--cassette-dir={cassettes}")
    recorded.assert_outcomes(passed=7)
    recorded.stdout.fnmatch_lines(["cassette summary: 8 recorded*"])
    scopes = {p.relative_to(cassettes).parts[1] for p in iter_cassette_files(cassettes)}
    keyed = {s for s in scopes if s.startswith("test_keyed.py")}
    assert scopes - keyed == {
        "test_app.py__test_joke",
        "test_app.py__test_twice",
        "greetings",
        "test_app.py__test_from_a_subprocess",
    }
    assert {s.rsplit("-", 1)[0] for s in keyed} == {
        "test_keyed.py__test_with_key_redacted_-one",
        "test_keyed.py__test_with_key_redacted_-two",
    }
    for path in iter_cassette_files(cassettes):
        for key in KEYS:
            assert key not in str(path) and key.encode() not in path.read_bytes(), path
    assert sorted(
        formats.load(p).test_id for p in iter_cassette_files(cassettes) if "keyed" in str(p)
    ) == [
        "test_keyed.py::test_with_key[<redacted>-one]",
        "test_keyed.py::test_with_key[<redacted>-two]",
    ]
    greetings = [p for p in iter_cassette_files(cassettes / BY_TEST_DIR / "greetings")]
    assert len(formats.load(greetings[0]).responses) == 2  # the marker shared one cassette
    assert all(
        p.relative_to(cassettes).parts[0] == BY_TEST_DIR for p in iter_cassette_files(cassettes)
    )

    hits = http_upstream.state.hits
    replayed = run(project, "--cassette-mode=replay", f"--cassette-dir={cassettes}")
    replayed.assert_outcomes(passed=7)
    replayed.stdout.fnmatch_lines(["cassette summary: 8 hits, 0 misses, 0 unused*"])
    assert http_upstream.state.hits == hits

    # with two xdist workers, each with its own proxy
    parallel = run(project, "--cassette-mode=replay", f"--cassette-dir={cassettes}", "-n", "2")
    parallel.assert_outcomes(passed=7)
    parallel.stdout.fnmatch_lines(["cassette summary: 8 hits, 0 misses, 0 unused*"])
    assert http_upstream.state.hits == hits


# A miss outside any test (at import, as LiteLLM's price map was): no test fails for it.
AT_IMPORT = """
import os, openai

try:
    openai.OpenAI(api_key="sk-test-plugin", base_url=os.environ["FAKE_UPSTREAM"] + "/v1",
                  max_retries=0).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "asked at import"}])
except openai.APIStatusError:
    pass

def test_passes():
    pass
"""


def test_a_swallowed_miss_fails_the_test_that_caused_it(project):
    """And a miss outside any test fails the run with its message printed at the end."""
    cassettes = project.path / "cassettes"
    cassettes.mkdir()
    project.makepyfile(test_swallow=SWALLOW, test_at_import=AT_IMPORT)
    result = run(
        project,
        "--cassette-mode=replay",
        f"--cassette-dir={cassettes}",
        "test_swallow.py",
        "test_at_import.py",
    )
    result.assert_outcomes(failed=1, passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*cassette replay miss*", "*never recorded*"])
    result.stdout.fnmatch_lines(["*Record it with --cassette-mode=auto (or record).*"])
    result.stdout.fnmatch_lines(
        ["cassette miss: no recording*asked at import*", "cassette summary: 0 hits*2 misses*"]
    )


def test_shared_cassette_is_the_fallback_and_prune_lists_unused(project, http_upstream):
    cassettes = project.path / "cassettes"
    # recorded outside any test scope (e.g. by `cassette run`): shared by every test
    shared = run(project, "--cassette-mode=record", f"--cassette-dir={cassettes}", "-k", "joke")
    shared.assert_outcomes(passed=1)
    scoped = next(iter_cassette_files(cassettes))
    target = cassettes / Path(*scoped.relative_to(cassettes).parts[2:])
    target.parent.mkdir(parents=True, exist_ok=True)
    scoped.rename(target)  # now a shared recording, not test_joke's own
    extra = target.with_name("gpt-4o-unused.json")
    rec = formats.load(target)
    rec.request.body.value["messages"][0]["content"] = "nobody asks this"
    extra.write_bytes(cassette.dumps(rec))

    result = run(
        project,
        "--cassette-mode=replay",
        f"--cassette-dir={cassettes}",
        "-k",
        "joke",
        "--cassette-prune",
    )
    result.assert_outcomes(passed=1)  # test_joke found its answer in the shared cassette
    result.stdout.fnmatch_lines(["*not pruning*full*"])  # -k: not a full run

    project.makepyfile(test_app=PROJECT.split("def test_twice")[0])
    listed = run(
        project, "--cassette-mode=replay", f"--cassette-dir={cassettes}", "--cassette-prune"
    )
    listed.assert_outcomes(passed=1)
    listed.stdout.fnmatch_lines(["cassette: 1 recordings unused*", f"*{extra.name}"])
    assert extra.exists()
    deleted = run(
        project,
        "--cassette-mode=replay",
        f"--cassette-dir={cassettes}",
        "--cassette-prune",
        "--cassette-yes",
    )
    deleted.stdout.fnmatch_lines(["cassette: 1 recordings deleting*"])
    assert not extra.exists() and target.exists()


@pytest.mark.slow
@pytest.mark.timeout(400)  # ten pytest sessions, each with its proxy: over 120 s at a load of 8
def test_prune_refuses_unless_every_test_ran_and_passed(project):
    """Recordings of tests that did not run look unused: pruning after a partial or failing run
    would delete them. Each way of not running everything through the recordings is refused,
    and nothing is deleted. Then ``--cassette-set`` reaches the proxy: with the recordings made
    40 days old, ``cassette_max_age=30d`` and ``cassette_stale=fail`` refuse them as stale."""
    cassettes = project.path / "cassettes"
    run(project, "--cassette-mode=record", f"--cassette-dir={cassettes}").assert_outcomes(passed=5)
    joke = next(p for p in iter_cassette_files(cassettes) if "test_joke" in str(p))
    replay = [
        "--cassette-mode=replay",
        f"--cassette-dir={cassettes}",
        "--cassette-prune",
        "--cassette-yes",
    ]
    quiet = "def test_quiet():\n    pass\n"  # with test_app.py set aside: no request at all
    cases = [
        ((), "test_app.py::test_joke", "tests were selected on the command line"),
        ((), "-k joke", "tests were selected with -k or -m"),
        ((), "--collect-only", "the tests were only collected"),
        ((), "--cassette-mode=passthrough", "passthrough mode looks no recording up"),
        (("test_quiet", quiet), "", "no request reached the proxy"),
        (
            ("test_xfail", "import pytest\n@pytest.mark.xfail\ndef test_later():\n    assert 0\n"),
            "",
            "1 tests were expected to fail, and did",
        ),
        (
            ("test_fail", "def test_fails():\n    assert False\n"),
            "",
            "the run did not pass (tests_failed)",
        ),
        (
            ("test_stop", "def test_stop():\n    raise KeyboardInterrupt\n"),
            "",
            "the run did not pass (interrupted)",
        ),
        (
            ("test_skip", "import pytest\n@pytest.mark.skip\ndef test_later():\n    pass\n"),
            "",
            "1 tests were skipped",
        ),
    ]
    app, aside = project.path / "test_app.py", project.path / "app.py.aside"
    for extra_file, args, reason in cases:
        if extra_file:
            project.makepyfile(**{extra_file[0]: extra_file[1]})
        if extra_file and extra_file[0] == "test_quiet":
            app.rename(aside)
        result = run(project, *replay, *args.split())
        result.stdout.fnmatch_lines([f"cassette: not pruning: {reason}*"])
        assert joke.exists(), reason
        if extra_file:
            (project.path / f"{extra_file[0]}.py").unlink()
        if aside.exists():
            aside.rename(app)
    # every test ran and passed: nothing is unused, nothing is deleted
    full = run(project, *replay)
    full.stdout.fnmatch_lines(["cassette: nothing to prune"])
    assert len(list(iter_cassette_files(cassettes))) == 4
    for path in iter_cassette_files(cassettes):
        age_by(path, 40)
    stale = run(
        project,
        "--cassette-mode=replay",
        f"--cassette-dir={cassettes}",
        "--cassette-set",
        "cassette_max_age=30d",
        "--cassette-set",
        "cassette_stale=fail",
    )
    assert stale.ret != 0
    stale.stdout.fnmatch_lines(["cassette summary: 0 hits*refused as stale*"])


TUNNEL = """
import os, socket

def test_passes_but_opens_a_raw_tunnel():
    port = int(os.environ["HTTPS_PROXY"].rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"CONNECT 127.0.0.1:" + os.environ["FAKE_UPSTREAM"].rsplit(":", 1)[1].encode()
                  + b" HTTP/1.1\\r\\n\\r\\n")
        s.recv(200)
        s.sendall(b"\\x00\\x01 not http")
        s.recv(200)
"""


def test_a_passing_run_fails_when_the_replay_refused_a_connection(
    project, http_upstream, monkeypatch
):
    """Every test passed, but something tried to reach the network in replay: the session
    exits non-zero and the summary says why. On CI too (``CI=true``, where a run no client
    reached fails): the refused tunnel was a client reaching the proxy, so that is the one
    reason, and no warning says nothing reached it."""
    cassettes = project.path / "cassettes"
    cassettes.mkdir()
    project.makepyfile(test_tunnel=TUNNEL)
    monkeypatch.setenv("CI", "true")
    before = http_upstream.state.connections
    result = run(project, "--cassette-mode=replay", f"--cassette-dir={cassettes}", "test_tunnel.py")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["cassette summary: *, 1 upstream connections refused (replay)"])
    result.stdout.fnmatch_lines(["cassette: the run fails: 1 upstream connections refused"])
    assert "no request reached the proxy" not in result.stdout.str()
    assert http_upstream.state.connections == before


def test_a_session_no_request_reached_warns_and_fails_on_ci(project, monkeypatch):
    cassettes = project.path / "cassettes"
    cassettes.mkdir()
    project.makepyfile(test_nothing="def test_no_llm_call():\n    assert True\n")
    monkeypatch.delenv("CI", raising=False)
    quiet = run(project, "--cassette-mode=replay", f"--cassette-dir={cassettes}", "test_nothing.py")
    assert quiet.ret == pytest.ExitCode.OK
    quiet.stdout.fnmatch_lines(["cassette: warning: no request reached the proxy*"])
    monkeypatch.setenv("CI", "true")
    on_ci = run(project, "--cassette-mode=replay", f"--cassette-dir={cassettes}", "test_nothing.py")
    on_ci.assert_outcomes(passed=1)
    assert on_ci.ret == pytest.ExitCode.TESTS_FAILED


PLACEHOLDER_KEY = "sk-cassette-replay-placeholder"  # as the README gives it
NO_KEY = """
import os, openai

def test_ask():
    key = os.environ.get("OPENAI_API_KEY")
    print("OPENAI_API_KEY", key)
    client = openai.OpenAI(api_key=key or "sk-test-plugin", max_retries=0,
                           base_url=os.environ["FAKE_UPSTREAM"] + "/v1")
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
"""


def test_a_replay_gives_the_tests_a_placeholder_key_and_a_record_none(project, monkeypatch):
    """No key in the environment: recorded (the test's own fake key), then replayed with the
    placeholder the session set, which the test's client sends; the note names it."""
    for name in [k for k in os.environ if k.endswith(("_API_KEY", "_AUTH_TOKEN"))]:
        monkeypatch.delenv(name)
    project.makepyfile(test_no_key=NO_KEY)
    cassettes = project.path / "cassettes"
    args = [f"--cassette-dir={cassettes}", "-s", "test_no_key.py"]
    recorded = run(project, "--cassette-mode=record", *args)
    recorded.assert_outcomes(passed=1)
    recorded.stdout.fnmatch_lines(["*OPENAI_API_KEY None*"])
    assert PLACEHOLDER_KEY not in recorded.stdout.str()
    replayed = run(project, "--cassette-mode=replay", *args)
    replayed.assert_outcomes(passed=1)
    replayed.stdout.fnmatch_lines(
        [
            f"*OPENAI_API_KEY {PLACEHOLDER_KEY}*",
            "cassette summary: 1 hits, 0 misses*",
            "cassette: replay: no key was set for OPENAI_API_KEY, ANTHROPIC_API_KEY,*"
            f"the placeholder '{PLACEHOLDER_KEY}'*",
        ]
    )


PAIR = (
    ASK
    + """
def test_one():
    assert ask("one").startswith("Answer")

def test_two():
    assert ask("two").startswith("Answer")
"""
)


def test_refresh_of_one_old_test_rewrites_only_its_own_cassette(
    pytester, http_upstream, monkeypatch
):
    """pytest --cassette-mode=refresh -k NAME: the test's recording is forwarded and rewritten
    in its own file; the other test's file is not touched."""
    monkeypatch.setenv("FAKE_UPSTREAM", http_upstream.base_url)
    pytester.makepyfile(test_pair=PAIR)
    cassettes = pytester.path / "cassettes"
    run(pytester, "--cassette-mode=record", f"--cassette-dir={cassettes}").assert_outcomes(passed=2)
    files = {p.relative_to(cassettes).parts[1]: p for p in iter_cassette_files(cassettes)}
    for path in files.values():
        age_by(path, 40)
    untouched = files["test_pair.py__test_two"].read_bytes()
    hits = http_upstream.state.hits

    result = run(
        pytester,
        "--cassette-mode=refresh",
        "--cassette-older-than=30d",
        f"--cassette-dir={cassettes}",
        "-k",
        "test_one",
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["cassette summary: 0 hits, 1 recorded, 0 misses*"])
    assert http_upstream.state.hits == hits + 1
    assert set(iter_cassette_files(cassettes)) == set(files.values())
    [answer] = formats.load(files["test_pair.py__test_one"]).responses
    assert answer.body.value["choices"][0]["message"]["content"] == "Answer 2 to: one"
    assert files["test_pair.py__test_two"].read_bytes() == untouched


def test_summaries_of_xdist_workers_combine_into_one():
    """Each worker's proxy counts its own; the session's summary adds every counter, and a
    recording is unused only if no worker used it."""
    from proxy_addon.summary import Summary

    names = (
        "requests",
        "hits",
        "recorded",
        "misses",
        "abandoned",
        "write_errors",
        "internal_errors",
        "refused_connections",
        "stale",
        "stale_refused",
    )
    one = Summary(
        **dict.fromkeys(names, 1), recordings=3, unused=["a.json", "b.json"], miss_messages=["m1"]
    )
    two = Summary(**dict.fromkeys(names, 2), recordings=3, unused=["b.json"], miss_messages=["m2"])
    total = Summary.combine([one, two])
    assert {name: getattr(total, name) for name in names} == dict.fromkeys(names, 3)
    assert (total.recordings, total.unused, total.miss_messages) == (3, ["b.json"], ["m1", "m2"])


def test_recording_under_xdist_counts_as_a_serial_run_does(project):
    """Each worker's proxy knows only the files it recorded; the run's summary counts every
    file once, as one proxy would have: the recordings are the files now on disk (a serial
    auto run of this project says 6 recorded, 0 unused recordings (of 4))."""
    cassettes = project.path / "cassettes"
    parallel = run(project, "--cassette-mode=auto", f"--cassette-dir={cassettes}", "-n", "2")
    parallel.assert_outcomes(passed=5)
    counts = summary_counts(parallel.stdout.str())
    on_disk = len(list(iter_cassette_files(cassettes)))
    assert (counts["recorded"], counts["recordings"], counts["unused"]) == (6, on_disk, 0)
    assert on_disk == 4
