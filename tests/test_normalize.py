"""Normalisers, in-process: the whole adversarial corpus (tests/normaliser_corpus.py) through the
one request key function with every preset on; exact beats normalised in the index; what a
normalised hit reports; cassette explain and cassette volatile on files written by hand (plain
orjson, not the code under test). The same corpus through a real mitmdump: tests/test_volatile.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from click.testing import CliRunner

from proxy_addon.cli import main
from proxy_addon.matching import canonical, normalize, volatile
from proxy_addon.store import CassetteStore
from proxy_addon.summary import Summary
from tests.normaliser_corpus import ALL_PRESETS, KEPT_APART, MATCHED, Case

URL = "https://api.openai.com/v1/chat/completions"
EVERY_PRESET = canonical.Rules(normalize=normalize.compile_rules([ALL_PRESETS]))


def live_key(case: Case, side: str, rules: canonical.Rules = EVERY_PRESET):
    """A live request's canonical form, from the bytes a client sends."""
    query = case.query(side)
    return canonical.canonicalize(
        canonical.Request.from_url(
            "POST",
            URL + (f"?{query}" if query else ""),
            "application/json",
            orjson.dumps(case.body(side)),
        ),
        rules,
    )


def test_the_corpus_stays_apart_and_its_volatile_forms_match():
    assert len(KEPT_APART) >= 40 and len(MATCHED) >= 30
    collided = [
        c.name for c in KEPT_APART if live_key(c, "recorded").key() == live_key(c, "asked").key()
    ]
    missed = [
        c.name for c in MATCHED if live_key(c, "recorded").key() != live_key(c, "asked").key()
    ]
    assert (collided, missed) == ([], [])
    # the volatile ones really differ: they match only once normalised
    assert all(
        live_key(c, "recorded").exact_key() != live_key(c, "asked").exact_key() for c in MATCHED
    )


def test_each_volatile_form_is_reported_as_the_value_it_replaced():
    """What a normalised hit lists: the volatile value as asked and as recorded, found inside
    the text (not the whole prompt), with the form that replaced it."""
    normalizer = EVERY_PRESET.normalize
    assert normalizer is not None
    for case in MATCHED:
        asked, recorded = live_key(case, "asked"), live_key(case, "recorded")
        hidden = volatile.hidden(asked.original(), recorded.original(), normalizer)
        assert hidden, case.name
        for h in hidden:
            assert h.form and h.asked != h.recorded, (case.name, h)
            shown = orjson.dumps([case.body("asked"), case.query("asked")]).decode()
            assert h.asked in shown, (case.name, h)
    [h] = volatile.hidden(
        live_key(MATCHED[0], "asked").original(),
        live_key(MATCHED[0], "recorded").original(),
        normalizer,
    )
    assert (h.path, h.asked, h.recorded, h.form) == (
        "messages[0].content",
        "Friday, November 27, 2026",
        "Thursday, November 26, 2026",
        "dates: written date",
    )


def test_without_a_normaliser_nothing_is_computed_twice(tmp_path):
    """No normaliser, or one that changes nothing in a request: one canonical form, one key,
    and an index entry whose second key is the very same string."""
    case = KEPT_APART[0]
    plain = live_key(case, "recorded", canonical.Rules())
    assert plain.exact is None and plain.exact_key() is plain.key()
    nothing_volatile = live_key(case, "recorded")
    assert nothing_volatile.exact is None
    write(tmp_path / "a.json", chat("no date here"))
    write(tmp_path / "b.json", chat("Today is 2026-11-26"))
    for rules in (canonical.Rules(), EVERY_PRESET):
        store = CassetteStore(tmp_path, rules)
        store.load()
        by_file = {e.path.name: e for e in store.index.all_entries()}
        assert by_file["a.json"].exact_key is by_file["a.json"].key
        assert (by_file["b.json"].exact_key is by_file["b.json"].key) == (rules.normalize is None)


def test_a_lone_surrogate_is_normalised_around_not_raised_on():
    """A query decoded with surrogateescape may hold lone surrogates: the RE2 prefilter scan
    must not raise on them (in the request hook that would be a 500)."""
    request = canonical.Request(
        "GET", "https", "api.example", None, "/v1/x", "since=1764142239&note=\udcff 2026-11-26"
    )
    canon = canonical.canonicalize(request, EVERY_PRESET)
    assert canon.query == (("note", "\udcff <date>"), ("since", "<time>"))


def chat(content: str, answer: str | None = None) -> dict[str, Any]:
    """A cassette in our format, written by hand."""
    return {
        "format": "llm-cassette",
        "version": 1,
        "request": {
            "method": "POST",
            "url": URL,
            "headers": {"content-type": "application/json"},
            "body": {"model": "gpt-4o", "messages": [{"role": "user", "content": content}]},
        },
        "responses": [
            {
                "status": 200,
                "headers": [["content-type", "application/json"]],
                "body": {"choices": [{"message": {"content": answer or f"to {content}"}}]},
            }
        ],
    }


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    return path


def asked(content: str) -> canonical.CanonicalRequest:
    body = orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": content}]})
    return canonical.canonicalize(
        canonical.Request.from_url("POST", URL, "application/json", body), EVERY_PRESET
    )


def test_exact_beats_normalised_and_the_nearest_original_wins(tmp_path):
    write(tmp_path / "a.json", chat("Stand-up on 2026-11-26 at 10:30"))
    write(tmp_path / "b.json", chat("Stand-up on 2026-11-26 at 09:00"))
    store = CassetteStore(tmp_path, EVERY_PRESET)
    store.load()

    def answer(content: str):
        hit = store.lookup(asked(content))
        assert hit is not None
        return hit.entry.path.name, hit.normalised, [e.path.name for e in hit.passed_over]

    assert answer("Stand-up on 2026-11-26 at 09:00") == ("b.json", False, [])
    assert answer("Stand-up on 2026-11-26 at 10:30") == ("a.json", False, [])
    # only normalising matches: the original differing in the fewest values wins (the date,
    # not the date and the time), and the one passed over is named
    assert answer("Stand-up on 2026-11-27 at 10:30") == ("a.json", True, ["b.json"])
    assert answer("Stand-up on 2026-11-27 at 09:00") == ("b.json", True, ["a.json"])
    assert store.lookup(asked("Stand-up on 2026-11-27 at 09:00, bring coffee")) is None


def test_normalised_hits_add_up_over_workers():
    one = Summary(hits=2, normalised=2, normalised_hits=[{"file": "a"}, {"file": "b"}])
    two = Summary(hits=1, normalised=1, normalised_hits=[{"file": "c"}])
    total = Summary.combine([one, two])
    assert (total.normalised, [n["file"] for n in total.normalised_hits]) == (3, ["a", "b", "c"])
    assert total.line().endswith(", 3 answered after normalising")
    assert "normalising" not in Summary(hits=3).line()


def cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_explain_shows_what_each_preset_replaces_and_which_recording_answers(tmp_path):
    cassettes = tmp_path / "c"
    old = write(cassettes / "old.json", chat("Today is Thursday, November 26, 2026. Run 17"))
    new = write(tmp_path / "new.json", chat("Today is Friday, November 27, 2026. Run 17"))
    result = cli("explain", str(new), "--dir", str(cassettes))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert (
        "  dates:   messages[0].content 'Friday, November 27, 2026' → <date> "
        "(dates: written date)" in lines
    )
    assert "  times:   nothing" in lines and "  uuids:   nothing" in lines
    assert "no recording matches it as it is" in lines
    assert f"with cassette_normalize=times,dates,uuids,hex-ids: answered by {old}" in lines
    assert (
        "  messages[0].content: 'Friday, November 27, 2026' (asked) → "
        "'Thursday, November 26, 2026' (recorded)" in lines
    )

    # a JSON body with --url; a normaliser that does not reach the value: no answer, the nearest
    body = tmp_path / "body.json"
    body.write_bytes(
        orjson.dumps(chat("Today is Friday, November 27, 2026. Run 17")["request"]["body"])
    )
    result = cli(
        "explain",
        str(body),
        "--url",
        URL,
        "--normalize",
        "uuids",
        "--dir",
        str(cassettes),
        "--json",
    )
    assert result.exit_code == 1, result.output
    out = orjson.loads(result.output)
    assert out["exact"] is None and out["normalised"] is None
    assert out["nearest"] == {"file": str(old), "differs_at": ["messages[0].content"]}
    assert [f["value"] for f in out["replaces"]["dates"]] == ["Friday, November 27, 2026"]

    # the request's own file inside --dir does not answer itself; an exact recording does
    write(cassettes / "same.json", chat("Today is Friday, November 27, 2026. Run 17"))
    inside = write(cassettes / "new.json", chat("Today is Friday, November 27, 2026. Run 17"))
    out = orjson.loads(cli("explain", str(inside), "--dir", str(cassettes), "--json").output)
    assert out["exact"] == str(cassettes / "same.json")


def test_volatile_names_paths_and_shapes_and_proposes_options_it_checked(tmp_path):
    """Two runs of the same tests, written by hand: a timestamp and a UUID (presets), a counter
    after a word (a rule), a random user token (an ignored path), and a prompt whose wording
    changed (not a volatile value: nothing proposed)."""

    def run(folder: str, stamp: str, uid: str, n: int, user: str, wording: str) -> Path:
        root = tmp_path / folder
        doc = chat(f"Session {n} at {stamp} for run {uid}")
        doc["request"]["body"]["user"] = user
        write(root / "by-test" / "t1" / "api.openai.com" / "chat" / "gpt-4o-aaa.json", doc)
        write(
            root / "by-test" / "t2" / "api.openai.com" / "chat" / "gpt-4o-bbb.json", chat(wording)
        )
        write(root / "shared.json", chat("the same in both"))
        return root

    a = run(
        "a",
        "2026-11-26T07:30:39Z",
        "3f2a9c1d-7e4b-4c1d-9e2f-0123456789ab",
        41,
        "u8Fj3kL0",
        "Tell me a joke",
    )
    b = run(
        "b",
        "2026-11-27T10:02:11Z",
        "8b01de55-12ab-4cde-8f00-abcdefabcdef",
        42,
        "Zq9xW2pR",
        "Tell me a pun",
    )
    result = cli("volatile", str(a), str(b), "--json")
    assert result.exit_code == 1, result.output
    out = orjson.loads(result.output)
    assert out["same"] == 1 and out["only_a"] == [] and out["only_b"] == []
    first, second = out["pairs"]
    assert (first["a"], first["matches"]) == (
        "by-test/t1/api.openai.com/chat/gpt-4o-aaa.json",
        True,
    )
    content, user = first["differences"]
    assert (content["path"], content["fix"]) == (
        "messages[0].content",
        r"preset times,uuids; rule (?<=Session\ )\d+=<n>",
    )
    assert [(v["form"], v["a"], v["b"]) for v in content["values"]] == [
        (r"rule (?<=Session\ )\d+", "41", "42"),
        ("times: ISO 8601 timestamp", "2026-11-26T07:30:39Z", "2026-11-27T10:02:11Z"),
        (
            "uuids: UUID",
            "3f2a9c1d-7e4b-4c1d-9e2f-0123456789ab",
            "8b01de55-12ab-4cde-8f00-abcdefabcdef",
        ),
    ]
    assert (user["path"], user["shape"], user["fix"], user["a"]) == (
        "user",
        "letters and digits (8)",
        "ignore user",
        "u8Fj3kL0",
    )
    assert second["matches"] is False
    assert [(d["path"], d["fix"]) for d in second["differences"]] == [("messages[0].content", "")]
    assert out["options"] == [
        "cassette_normalize=times,uuids",
        r"cassette_normalize=(?<=Session\ )\d+=<n>",
        "cassette_ignore=user",
    ]
