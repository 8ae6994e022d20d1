"""Normalisers end to end, through real mitmdump processes, httpx and the local upstream: the
adversarial corpus (tests/normaliser_corpus.py) recorded once and replayed with every preset on
(no pair shares an answer, every volatile form hits, exact beats normalised, and the summary
lists what was replaced, without secrets); and cassette volatile, run on two recordings of a
test whose prompt holds a timestamp and a UUID, proposing the options that make the next
replay hit.

The upstream answers "Answer N to: <last message> [<x-fake-tag>]": the tag (not part of
matching) names the case a recording was made for, so an answer says which recording it came
from.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from click.testing import CliRunner

from proxy_addon.cli import main
from tests.conftest import FAKE_KEY, summary_counts
from tests.normaliser_corpus import ALL_PRESETS, KEPT_APART, MATCHED, Case
from tests.upstream import FakeUpstreamServer

STANDUP_A = Case("stand-up at 10:30", "Stand-up on 2026-11-26 at 10:30", "")
STANDUP_B = Case("stand-up at 09:00", "Stand-up on 2026-11-26 at 09:00", "")
SECRET = Case(
    "a key beside a date",
    f"Use {FAKE_KEY} until 2026-11-26",
    f"Use {FAKE_KEY} until 2026-11-27",
)


def send(client: httpx.Client, upstream: FakeUpstreamServer, case: Case, side: str, tag: str):
    """One chat request of a case's side; the tag names the recording the answer comes from."""
    query = case.query(side)
    return client.post(
        f"{upstream.base_url}/v1/chat/completions" + (f"?{query}" if query else ""),
        content=orjson.dumps(case.body(side)),
        headers={
            "content-type": "application/json",
            "authorization": f"Bearer {FAKE_KEY}",
            "x-fake-tag": tag,
        },
    )


def answer(response: httpx.Response) -> str:
    return response.json()["choices"][0]["message"]["content"]


@pytest.mark.slow
def test_normalisers_never_hand_one_prompt_another_answer(tmp_path, http_upstream, proxies):
    cassettes = tmp_path / "c"
    recorded = [*KEPT_APART, *MATCHED, STANDUP_A, STANDUP_B, SECRET]
    rec = proxies(cassettes, "record")
    with httpx.Client(proxy=rec.url, timeout=20) as client:
        for case in recorded:
            assert send(client, http_upstream, case, "recorded", case.name).status_code == 200
    rec.stop()
    assert FAKE_KEY.encode() not in b"".join(p.read_bytes() for p in cassettes.rglob("*.json"))

    summary = tmp_path / "summary.json"
    play = proxies(
        cassettes, "replay", cassette_normalize=ALL_PRESETS, cassette_summary=str(summary)
    )
    with httpx.Client(proxy=play.url, timeout=20) as client:
        wrong = [
            (case.name, answer(r))
            for case in KEPT_APART
            if (r := send(client, http_upstream, case, "asked", "live")).status_code != 424
        ]
        hits = {case.name: send(client, http_upstream, case, "asked", "live") for case in MATCHED}
        standup = [
            answer(send(client, http_upstream, Case("", text, ""), "recorded", "live"))
            for text in (
                "Stand-up on 2026-11-26 at 10:30",  # exactly A
                "Stand-up on 2026-11-26 at 09:00",  # exactly B
                "Stand-up on 2026-11-27 at 09:00",  # only normalised: B is nearer than A
            )
        ]
        secret = send(client, http_upstream, SECRET, "asked", "live")
    log = play.stop()

    assert wrong == []  # 0 of the pairs got the other prompt's answer
    missed = [name for name, r in hits.items() if r.status_code != 200]
    assert missed == []
    for case in MATCHED:
        assert answer(hits[case.name]) == f"Answer 1 to: {case.recorded} [{case.name}]"
    # (the corpus's "Due 11/26/2026" and "Due 11-26-2026" normalise alike too: each asked form
    # got its own, nearer, original above)
    assert standup == [
        "Answer 1 to: Stand-up on 2026-11-26 at 10:30 [stand-up at 10:30]",
        "Answer 1 to: Stand-up on 2026-11-26 at 09:00 [stand-up at 09:00]",
        "Answer 1 to: Stand-up on 2026-11-26 at 09:00 [stand-up at 09:00]",
    ]
    assert secret.status_code == 200
    normalised = len(MATCHED) + 2  # the volatile forms, the third stand-up, the key's date
    counts = summary_counts(log)
    assert (counts["hits"], counts["misses"], counts["normalised"]) == (
        len(MATCHED) + 4,
        len(KEPT_APART),
        normalised,
    )
    file_a = next(
        p for p in cassettes.rglob("*.json") if b"Stand-up on 2026-11-26 at 10" in p.read_bytes()
    )
    file_b = next(
        p for p in cassettes.rglob("*.json") if b"Stand-up on 2026-11-26 at 09" in p.read_bytes()
    )
    [choice] = [line for line in log.splitlines() if f"normalising, from {file_b}" in line]
    assert (
        f"answered after normalising, from {file_b}: messages[0].content '2026-11-27' → "
        f"'2026-11-26' (the nearest of 2 recordings that normalise alike; not {file_a})"
    ) in choice

    raw = summary.read_bytes()
    assert FAKE_KEY.encode() not in raw
    written = orjson.loads(raw)
    assert written["normalised"] == normalised and len(written["normalised_hits"]) == normalised
    by_request = {
        tuple(r["live"] for r in item["replaced"]): item for item in written["normalised_hits"]
    }
    first = by_request[("Friday, November 27, 2026",)]
    assert first["replaced"] == [
        {
            "path": "messages[0].content",
            "live": "Friday, November 27, 2026",
            "recorded": "Thursday, November 26, 2026",
            "form": "dates: written date",
        }
    ]
    assert first["passed_over"] == []
    assert by_request[("2026-11-27",)]["replaced"][0]["recorded"] == "2026-11-26"  # the key's
    assert by_request[("2026-11-27",)]["replaced"][0]["form"] == "dates: ISO date"


def git(repo: Path, *args: str) -> str:
    if shutil.which("git") is None:
        pytest.fail("git is needed for cassette volatile --since and is not installed")
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    ).stdout


def test_volatile_proposes_options_that_make_the_next_replay_hit(tmp_path, http_upstream, proxies):
    """A test whose prompt holds a timestamp and a UUID, recorded twice: cassette volatile
    (two folders, and --since against git) proposes times and uuids; with them a third run
    replays from the recording, only after normalising."""
    day = datetime(2026, 11, 26, 7, 30, 39, tzinfo=UTC)

    def prompt(n: int) -> Case:
        when = (day + timedelta(days=n, minutes=7 * n)).isoformat()
        return Case(f"run {n}", f"Summarise the log of run {uuid.uuid4()} at {when}", "")

    runs = [tmp_path / "repo" / "cassettes", tmp_path / "second"]
    for n, folder in enumerate(runs):
        rec = proxies(folder, "record")
        with httpx.Client(proxy=rec.url, timeout=20) as client:
            send(client, http_upstream, prompt(n), "recorded", f"run {n}")
        rec.stop()

    found = CliRunner().invoke(main, ["volatile", str(runs[0]), str(runs[1]), "--json"])
    assert found.exit_code == 1, found.output
    proposal = orjson.loads(found.output)
    assert proposal["options"] == ["cassette_normalize=times,uuids"]
    [pair] = proposal["pairs"]
    [difference] = pair["differences"]
    assert (difference["path"], difference["fix"], pair["matches"]) == (
        "messages[0].content",
        "preset times,uuids",
        True,
    )
    assert [v["form"] for v in difference["values"]] == ["uuids: UUID", "times: ISO 8601 timestamp"]
    assert [v["b"][:10] for v in difference["values"]][1] == "2026-11-27"

    # the same found by re-recording into a git working tree
    repo = tmp_path / "repo"
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first recording")
    for old in runs[0].rglob("*.json"):
        old.unlink()
    shutil.copytree(runs[1], runs[0], dirs_exist_ok=True)
    since = CliRunner().invoke(main, ["volatile", "--since", "HEAD", "--dir", str(runs[0])])
    assert since.exit_code == 1, since.output
    assert "  --set cassette_normalize=times,uuids\n" in since.output
    assert "with these, 1 of 1 pairs match" in since.output

    # a third run, with the options applied: answered from the recording, after normalising
    play = proxies(runs[1], "replay", **dict(o.split("=", 1) for o in proposal["options"]))
    with httpx.Client(proxy=play.url, timeout=20) as client:
        response = send(client, http_upstream, prompt(2), "recorded", "live")
    counts = summary_counts(play.stop())
    assert response.status_code == 200, response.text
    assert re.fullmatch(r"Answer 1 to: Summarise the log of run .* \[run 1\]", answer(response))
    assert (counts["hits"], counts["normalised"]) == (1, 1)
