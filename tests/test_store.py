"""The directory: index, sequential lookup, atomic writes, layout safety, bad files."""

from __future__ import annotations

import os
import re
import shutil

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy_addon.matching import canonical
from proxy_addon.model import Body, RecordedRequest, RecordedResponse
from proxy_addon.store import CassetteStore
from proxy_addon.store.layout import layout_path, per_test_dir
from proxy_addon.store.writer import atomic_write
from tests.conftest import FIXTURES, SEED
from tests.keys import key_of

URL = "https://api.openai.com/v1/chat/completions"


def request(content: str) -> tuple[canonical.CanonicalRequest, RecordedRequest]:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": content}]}
    canon = key_of("POST", URL, "application/json", orjson.dumps(body))
    return canon, RecordedRequest(
        "POST", URL, {"content-type": "application/json"}, Body("json", body)
    )


def answer(text: str) -> RecordedResponse:
    return RecordedResponse(
        200, [["content-type", "application/json"]], body=Body("json", {"text": text})
    )


def test_recorded_sequence_replays_in_order_then_repeats_last(tmp_path):
    store = CassetteStore(tmp_path)
    canon, req = request("hi")
    slots = [store.recorder.begin(canon, req) for _ in range(3)]
    # responses arrive out of order; the file keeps request order
    for (key, slot), text in zip(reversed(slots), ["c", "b", "a"]):
        store.recorder.finish(key, slot, answer(text))
    replay = CassetteStore(tmp_path)
    replay.load()
    got = [replay.lookup(canon).response.body.value["text"] for _ in range(5)]
    assert got == ["a", "b", "c", "c", "c"]
    assert replay.index.unused() == []


def test_lookup_misses_and_nearest(tmp_path):
    store = CassetteStore(tmp_path)
    canon, req = request("hi")
    key, slot = store.recorder.begin(canon, req)
    store.recorder.finish(key, slot, answer("x"))
    store.load()
    other, _ = request("hello")
    assert store.lookup(other) is None
    entry, diffs = store.index.nearest(other)
    assert diffs == ["messages[0].content"] and entry.path.exists()


def test_layout_is_browsable_and_never_escapes_root(tmp_path):
    canon, req = request("hi")
    path = layout_path(tmp_path, canon, URL, "gpt-4o")
    assert path.relative_to(tmp_path).parts[:-1] == ("api.openai.com", "v1", "chat", "completions")
    assert path.name.startswith("gpt-4o-") and path.suffix == ".json"
    for evil in ["../../etc/passwd", "/abs/path", "a\x00b", "..", "..\\..\\x"]:
        c = canonical.CanonicalRequest("POST", "h", "/" + evil + "/x")
        p = layout_path(tmp_path, c, "http://h/" + evil, evil)
        assert p.resolve().is_relative_to(tmp_path.resolve())
        assert "\x00" not in str(p)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=60), st.text(max_size=30))
def test_any_request_path_or_model_stays_inside_root(tmp_path_factory, path, model):
    root = tmp_path_factory.getbasetemp() / "root"
    c = canonical.CanonicalRequest("POST", "h", "/" + path)
    assert (
        layout_path(root, c, "http://evil.example/x", model)
        .resolve()
        .is_relative_to(root.resolve())
    )


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "a" / "c.json"
    atomic_write(target, b"old")

    def boom(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in target.parent.iterdir()] == ["c.json"]  # no temp file left


def test_bad_files_are_skipped_with_the_reason_and_others_served(tmp_path):
    shutil.copy(SEED, tmp_path / "seed.json")
    (tmp_path / "truncated.json").write_bytes(SEED.read_bytes()[:200])
    (tmp_path / "other.json").write_bytes(b'{"hello": "world"}')
    (tmp_path / ".hidden.json.tmp").write_bytes(b"partial")
    store = CassetteStore(tmp_path)
    store.load()
    assert len(store) == 1
    reasons = {b.path.name: b.reason for b in store.index.bad}
    assert set(reasons) == {"truncated.json", "other.json"}
    assert "not valid JSON" in reasons["truncated.json"]


def test_llama_stack_recordings_match_any_host(tmp_path):
    shutil.copy(SEED, tmp_path)
    for f in FIXTURES.glob("*.json"):
        shutil.copy(f, tmp_path)
    store = CassetteStore(tmp_path)
    store.load()
    assert not store.index.bad and len(store) == 10
    body = orjson.dumps(
        {
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "Tell me a joke"}],
            "stream": True,
        }
    )
    for url in (URL, "http://127.0.0.1:9999/v1/chat/completions"):
        hit = store.lookup(key_of("POST", url, "application/json", body))
        assert hit is not None and hit.entry.path.name == SEED.name
    models = store.lookup(key_of("GET", "http://localhost:8080/v1/models", None, None))
    assert models.response.body.value["data"][0]["id"] == "qwen2.5"


@pytest.mark.parametrize(
    "a, b",
    [
        ("test[hello, world]", "test[hello world]"),
        ("t[é]", "t[ü]"),
        ("a/b::c", "a::b::c"),
        ("x" * 130, "x" * 131),
        ("foo", "foo-" + per_test_dir("x")[-12:]),
    ],
)
def test_per_test_cassette_names_never_collide(a, b):
    assert per_test_dir(a) != per_test_dir(b)


def test_plain_node_ids_keep_their_readable_names():
    assert per_test_dir("tests/test_app.py::test_joke") == "tests__test_app.py__test_joke"
    assert per_test_dir("tests/test_app.py::TestX::test_y") == "tests__test_app.py__TestX__test_y"
    assert per_test_dir("greetings") == "greetings"


@settings(max_examples=500, deadline=None)
@given(st.lists(st.text(alphabet="ab_/:.[], é-", max_size=12), min_size=2, max_size=2, unique=True))
def test_per_test_dirs_are_injective_and_one_safe_directory(ids):
    a, b = ids
    assert per_test_dir(a) != per_test_dir(b)
    for name in map(per_test_dir, ids):
        assert re.fullmatch(r"[A-Za-z0-9._-]{1,120}", name) and name not in (".", "..")


def test_a_follow_up_turn_whose_answer_is_broken_never_stops_its_first_turn(tmp_path):
    """Two tests recorded the same first turn with two answers; the follow-up recorded after
    one of them has a request that reads and responses that do not. Choosing between the two
    reads which turns follow each answer: the broken one counts for nothing, the first turn
    is answered, and the broken file is dropped (named by a miss) when it is itself asked."""
    first = [{"role": "user", "content": "hi"}]

    def write(name: str, messages: list, status: object, test_id: str) -> None:
        doc = {
            "version": 1,
            "test_id": test_id,
            "request": {
                "method": "POST",
                "url": URL,
                "headers": {"content-type": "application/json"},
                "body": {"model": "m", "messages": messages},
            },
            "responses": [
                {
                    "status": status,
                    "headers": [["content-type", "application/json"]],
                    "body": {
                        "choices": [{"message": {"role": "assistant", "content": f"from {name}"}}]
                    },
                }
            ],
        }
        (tmp_path / f"{name}.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))

    write("a", first, 200, "t::a")
    write("b", first, 200, "t::b")
    follow_up = [
        *first,
        {"role": "assistant", "content": "from a"},
        {"role": "user", "content": "more"},
    ]
    write("f", follow_up, "not-a-status", "t::a")
    store = CassetteStore(tmp_path)
    store.load()
    assert len(store) == 3 and not store.index.bad  # only the requests are read at start-up

    def ask(messages: list):
        return store.lookup(
            key_of(
                "POST", URL, "application/json", orjson.dumps({"model": "m", "messages": messages})
            )
        )

    hit = ask(first)
    assert hit is not None and hit.entry.path.name in ("a.json", "b.json")
    assert ask(follow_up) is None
    assert [b.path.name for b in store.index.bad] == ["f.json"]


def test_loading_a_store_leaves_the_processs_garbage_collector_as_it_was(tmp_path):
    """The store is library code: the pytest plugin's process, or a user's, imports it. Loading
    a directory must leave their collector exactly as they set it (enabled or not, thresholds,
    frozen objects); only mitmdump's own process pauses it (mitm/options.py)."""
    import subprocess
    import sys

    cassettes = tmp_path / "cassettes"
    cassettes.mkdir()
    shutil.copy(SEED, cassettes / SEED.name)
    program = f"""
import gc, json
gc.set_threshold(1234, 5, 6)
frozen = [[i] for i in range(1000)]
gc.freeze()
def state(probe):
    collectable = gc.get_objects()  # the three generations, not the frozen objects
    return (gc.isenabled(), gc.get_threshold(), any(o is probe for o in collectable),
            any(o is frozen for o in collectable))
for enabled in (False, True):
    (gc.enable if enabled else gc.disable)()
    probe = [[enabled]]  # made after the freeze: the collector's, not frozen
    before = state(probe)
    from proxy_addon.store import CassetteStore
    store = CassetteStore({str(cassettes)!r})
    store.load()
    assert len(store) == 1
    print(json.dumps([before, state(probe)]))
"""
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert len(out) == 2
    for line in out:
        before, after = orjson.loads(line)
        assert before[2] and not before[3]  # the probe is collectable, the frozen list frozen
        assert before == after
