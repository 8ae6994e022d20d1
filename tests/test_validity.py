"""Cassettes that stay valid: normalisers for volatile values, staleness, refresh, and diff.

End to end with real mitmdump processes, the real openai SDK and a local upstream (which answers
"Answer N to: <last message>", N counting that request's arrivals, so a second recording of a
request gets a changed answer); the pure parts (presets, the shape/noise split) as unit tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import openai
import orjson
import pytest
from click.testing import CliRunner

from proxy_addon import formats, model
from proxy_addon.bodies.sse import Event
from proxy_addon.cli import main
from proxy_addon.matching import normalize
from proxy_addon.review.changes import compare
from proxy_addon.store.layout import iter_cassette_files
from tests.conftest import (
    CASSETTE,
    age_by,
    counted,
    openai_client,
    record_prompts,
    sdk_http_client,
)

SESSION_RULE = r"Session \d+=Session <n>"


def today_prompt(day: date) -> str:
    return f"You are a helpful assistant. Today is {day:%A, %B} {day.day}, {day.year}."


def ask(client: openai.OpenAI, *messages: tuple[str, str]) -> str | None:
    return (
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": role, "content": text} for role, text in messages]
        )
        .choices[0]
        .message.content
    )


def cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def file_of(cassettes: Path, prompt: str) -> Path:
    """The cassette whose request's last message is ``prompt`` (read as plain JSON)."""
    [path] = [
        p
        for p in iter_cassette_files(cassettes)
        if orjson.loads(p.read_bytes())["request"]["body"]["messages"][-1]["content"] == prompt
    ]
    return path


def test_recordings_made_for_one_base_url_answer_another_through_the_host_map(
    tmp_path, http_upstream, proxies
):
    """Recorded at http://127.0.0.1:PORT; asked, with the map set, at localhost:PORT and at
    another port (the same server elsewhere): hits; at a host not mapped, a miss that says
    exactly what to set."""
    cassettes = tmp_path / "c"
    record_prompts(proxies, cassettes, http_upstream, "mapped")
    port = http_upstream.server_address[1]
    recorded_for, elsewhere = f"127.0.0.1:{port}", f"localhost:{port + 1}"
    hits = http_upstream.state.hits

    def asked_at(proxy, host: str) -> str | None:
        client = openai.OpenAI(
            api_key="sk-test-host-map",
            base_url=f"http://{host}/v1",
            max_retries=0,
            http_client=sdk_http_client(proxy),
        )
        return ask(client, ("user", "mapped"))

    mapped = proxies(
        cassettes,
        "replay",
        cassette_host_map=[f"localhost:{port}={recorded_for}", f"{elsewhere}={recorded_for}"],
    )
    assert asked_at(mapped, f"localhost:{port}") == "Answer 1 to: mapped"
    assert asked_at(mapped, elsewhere) == "Answer 1 to: mapped"
    unmapped = f"localhost:{port + 2}"
    with pytest.raises(openai.APIStatusError) as err:  # a host not mapped is still a miss
        asked_at(mapped, unmapped)
    assert "differs at: host." in err.value.message
    assert (
        f"It was recorded for {recorded_for}: to answer requests to {unmapped} with the "
        f"recordings made for {recorded_for}, add --set cassette_host_map={unmapped}="
        f"{recorded_for}." in err.value.message
    )
    assert "Record it" not in err.value.message  # re-recording is not the fix
    assert counted(mapped.stop(), "hits", "misses") == (2, 1)
    assert http_upstream.state.hits == hits


def test_todays_date_in_the_prompt_matches_with_the_dates_normaliser(
    tmp_path, http_upstream, proxies
):
    cassettes = tmp_path / "c"
    today = date.today()
    tomorrow = today + timedelta(days=1)
    rec = proxies(cassettes, "record")
    client = openai_client(rec, http_upstream)
    assert (
        ask(client, ("system", today_prompt(today)), ("user", "what day?"))
        == "Answer 1 to: what day?"
    )
    assert ask(client, ("user", "Session 41 says hi")) == "Answer 1 to: Session 41 says hi"
    rec.stop()
    dated = file_of(cassettes, "what day?")
    assert today_prompt(today).encode() in dated.read_bytes()  # the cassette keeps the real text
    hits = http_upstream.state.hits

    exact = proxies(cassettes, "replay")
    client = openai_client(exact, http_upstream)
    with pytest.raises(openai.APIStatusError) as err:
        ask(client, ("system", today_prompt(tomorrow)), ("user", "what day?"))
    assert "messages[0].content" in err.value.message
    assert "It matches with the normaliser 'dates'" in err.value.message
    assert "--set cassette_normalize=dates" in err.value.message
    with pytest.raises(openai.APIStatusError) as err:
        ask(client, ("user", "Session 42 says hi"))
    assert "cassette_normalize" not in err.value.message  # no preset would make this one match
    assert "0 hits, 2 misses" in exact.stop()

    normalised = proxies(cassettes, "replay", cassette_normalize=["dates", SESSION_RULE])
    client = openai_client(normalised, http_upstream)
    assert (
        ask(client, ("system", today_prompt(tomorrow)), ("user", "what day?"))
        == "Answer 1 to: what day?"
    )
    assert ask(client, ("user", "Session 42 says hi")) == "Answer 1 to: Session 41 says hi"
    with pytest.raises(openai.APIStatusError):  # only the volatile part is ignored
        ask(client, ("system", today_prompt(tomorrow)), ("user", "what year?"))
    assert "2 hits, 1 misses" in normalised.stop()
    assert http_upstream.state.hits == hits  # nothing reached the upstream


def test_stale_recordings_are_warned_once_counted_refused_and_listed(
    tmp_path, http_upstream, proxies
):
    cassettes = tmp_path / "c"
    record_prompts(proxies, cassettes, http_upstream, "old one", "old two", "fresh")
    old = {file_of(cassettes, p) for p in ("old one", "old two")}
    for path in old:
        age_by(path, 40)

    listed = orjson.loads(
        cli("ls", "--dir", str(cassettes), "--older-than", "30d", "--json").output
    )
    assert {cassettes / row["file"] for row in listed} == old
    assert (
        cli("ls", "--dir", str(cassettes), "--older-than", "41d", "--json").output.strip() == "[]"
    )
    [total] = [
        r
        for r in orjson.loads(cli("stale", "--dir", str(cassettes), "--json").output)
        if r["dir"] == "(all)"
    ]
    assert (total["recordings"], total["older_than"], total["undated"]) == (
        3,
        {"7d": 2, "30d": 2, "90d": 0, "365d": 0},
        0,
    )

    warn = proxies(cassettes, "replay", cassette_max_age="30d")
    client = openai_client(warn, http_upstream)
    answers = [ask(client, ("user", p)) for p in ("old one", "old one", "old two", "fresh")]
    assert answers == ["Answer 1 to: old one"] * 2 + ["Answer 1 to: old two", "Answer 1 to: fresh"]
    log = warn.stop()
    for path in old:
        assert log.count(f"cassette stale: {path} was recorded 40 days ago") == 1, log
    assert "4 hits, 0 misses, 0 unused recordings (of 3), 3 answered from stale recordings" in log

    # cassette_stale=fail: the client gets an error, and cassette run fails the passing command
    app = tmp_path / "app.py"
    app.write_text(
        "import sys, openai\n"
        "client = openai.OpenAI(api_key='sk-test-run', base_url=sys.argv[1] + '/v1', "
        "max_retries=0)\n"
        "for prompt in sys.argv[2:]:\n"
        "    try:\n"
        "        print(client.chat.completions.create(model='gpt-4o', messages=[{'role': 'user', "
        "'content': prompt}]).choices[0].message.content)\n"
        "    except openai.APIStatusError as e:\n"
        "        print(e.status_code)\n"
    )
    result = subprocess.run(
        [
            CASSETTE,
            "run",
            "--dir",
            str(cassettes),
            "--older-than",
            "30d",
            "--set",
            "cassette_stale=fail",
            "--",
            sys.executable,
            str(app),
            http_upstream.base_url,
            "old one",
            "fresh",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.splitlines() == ["410", "Answer 1 to: fresh"]
    assert result.returncode == 1, result.stderr
    assert counted(result.stderr, "hits", "recorded", "misses", "stale_refused") == (1, 0, 0, 1)
    assert (
        f"cassette stale: {file_of(cassettes, 'old one')} was recorded 40 days ago" in result.stderr
    )


def _git(repo: Path, *args: str) -> str:
    if shutil.which("git") is None:
        pytest.fail("git is needed for cassette diff --since and is not installed")
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    return subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    ).stdout


def test_refresh_rewrites_old_recordings_in_place_and_diff_since_shows_the_change(
    tmp_path, http_upstream, proxies
):
    repo = tmp_path / "repo"
    cassettes = repo / "cassettes"
    record_prompts(proxies, cassettes, http_upstream, "old", "fresh", "unrelated")
    stale = file_of(cassettes, "old")
    age_by(stale, 40)
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "cassettes")
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in iter_cassette_files(cassettes)}
    hits = http_upstream.state.hits

    refresh = proxies(cassettes, "refresh", cassette_max_age="30d")
    client = openai_client(refresh, http_upstream)
    assert [ask(client, ("user", "old")), ask(client, ("user", "old"))] == [
        "Answer 2 to: old",
        "Answer 3 to: old",
    ]  # forwarded: the upstream's answer changed
    assert ask(client, ("user", "fresh")) == "Answer 1 to: fresh"  # young enough: replayed
    with pytest.raises(openai.APIStatusError) as err:
        ask(client, ("user", "never recorded"))
    assert "no recording" in err.value.message
    log = refresh.stop()
    assert counted(log, "hits", "recorded", "misses") == (1, 2, 1)
    assert http_upstream.state.hits == hits + 2  # the miss was not forwarded

    assert set(iter_cassette_files(cassettes)) == set(before)  # no new file
    for path, (raw, mtime) in before.items():
        if path != stale:
            assert (path.read_bytes(), path.stat().st_mtime_ns) == (raw, mtime), path
    refreshed = formats.load(stale)
    texts = [r.body.value["choices"][0]["message"]["content"] for r in refreshed.responses]
    assert texts == ["Answer 2 to: old", "Answer 3 to: old"]  # replaced, not appended
    when = datetime.fromisoformat(refreshed.responses[0].recorded_at)
    assert datetime.now(UTC) - when < timedelta(minutes=5)

    since = CliRunner().invoke(main, ["diff", "--since", "HEAD", "--dir", str(cassettes)])
    assert since.exit_code == 1, since.output
    rel = stale.relative_to(repo).as_posix()
    assert since.output.count("modified: ") == 1 and f"modified: {rel}" in since.output
    assert "shape:\n    responses: 1 → 2" in since.output
    assert 'response 1: text (4 → 4 words): "Answer 1 to: old" → "Answer 2 to: old"' in since.output
    assert "1 cassette files changed since HEAD, 1 with shape changes" in since.output

    old_copy = tmp_path / "before.json"
    old_copy.write_text(_git(repo, "show", f"HEAD:{rel}"))
    two = CliRunner().invoke(main, ["diff", str(old_copy), str(stale), "--json"])
    assert two.exit_code == 1
    seen = orjson.loads(two.output)
    assert seen["request"] == [] and seen["shape"] == ["responses: 1 → 2"]
    assert seen["noise"] == [
        'response 1: text (4 → 4 words): "Answer 1 to: old" → "Answer 2 to: old"'
    ]

    gone = file_of(cassettes, "unrelated")
    gone.rename(gone.with_name("renamed.json"))  # untracked now: an added and a deleted file
    files = orjson.loads(cli("diff", "--since", "HEAD", "--dir", str(cassettes), "--json").output)[
        "files"
    ]
    assert {(f["status"], f["file"]) for f in files} == {
        ("modified", rel),
        ("deleted", gone.relative_to(repo).as_posix()),
        ("added", gone.with_name("renamed.json").relative_to(repo).as_posix()),
    }


# ---------------------------------------------------------------------------------------------
# Unit tests: the presets, rules, and the shape / noise split


@pytest.mark.parametrize(
    "text, preset, expected",
    [
        ("Today is Thursday, November 26, 2026.", "dates", "Today is <date>."),
        (
            "on 2026-11-26 and 26 Nov 2026 and 2026/11/26",
            "dates",
            "on <date> and <date> and <date>",
        ),
        ("model gpt-4o-2024-08-06", "dates", "model gpt-4o-2024-08-06"),  # a snapshot name
        ("at 2026-11-26T07:30:39+00:00, 14:05:10", "times", "at <time>, <time>"),
        (
            "ts=1764142239 created_ms=1764142239123 n=1764142239",
            "times",
            "ts=<time> created_ms=<time> n=1764142239",
        ),
        ("id 3f2a9c1d-7e4b-4c1d-9e2f-0123456789ab", "uuids", "id <uuid>"),
        ("call_abc123XYZdef and file-uploads", "hex-ids", "<id> and file-uploads"),
    ],
)
def test_presets_replace_the_volatile_part_only(text, preset, expected):
    rules = normalize.compile_rules([preset])
    assert rules is not None and rules.text(text) == expected


def test_rules_are_checked_and_keep_unchanged_values_shared():
    assert normalize.compile_rules([]) is None
    rules = normalize.compile_rules(["dates,uuids", r"k\=\d+=k=<n>"])
    assert rules is not None and rules.presets == ("dates", "uuids")
    body = {"messages": [{"content": "k=12 on 2026-11-26"}], "keep": ["no volatile value"]}
    out = rules.value(body)
    assert out == {"messages": [{"content": "k=<n> on <date>"}], "keep": ["no volatile value"]}
    assert out["keep"] is body["keep"]
    for bad, reason in (
        ("datez", "neither a preset"),
        ("([a-z]=x", "not a valid regular"),
        (r"a=\9", "not a valid replacement"),
        ("dates,x=y", "separate values"),
    ):
        with pytest.raises(ValueError, match=reason):
            normalize.compile_rules([bad])


def _stream(*deltas: dict, finish: str = "stop") -> model.Recording:
    events = [
        Event(
            data={
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": d, "finish_reason": None}],
            }
        )
        for d in deltas
    ]
    events.append(
        Event(
            data={
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
            }
        )
    )
    events.append(Event(data="[DONE]"))
    return model.Recording(
        model.RecordedRequest("POST", "https://x.test/v1/chat/completions"),
        [model.RecordedResponse(200, stream=model.Stream("sse", events))],
    )


def test_wording_is_noise_and_tool_calls_are_shape():
    short = _stream({"content": "Hello"}, {"content": " there"})
    longer = _stream({"content": "Hello"}, {"content": " over"}, {"content": " here"})
    changes = compare(short, longer)
    assert changes.shape == []
    assert changes.noise == [
        'text (2 → 3 words): "Hello there" → "Hello over here"',
        "events: chat.completion.chunk 3 → 4",
    ]
    tool = _stream(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_1",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ]
        },
        finish="tool_calls",
    )
    changes = compare(short, tool)
    assert "finish: stop → tool_calls" in changes.shape
    assert "tool calls: none → get_weather({city: string})" in changes.shape
    assert "text: present → none" in changes.shape
    assert not compare(tool, tool)
