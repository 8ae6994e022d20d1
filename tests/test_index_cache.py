"""The index saved between runs: a start over an unchanged folder reads no cassette, and the saved
index is never trusted over the files (each change is read, a bad or stale saved index is
rebuilt), on real files, through a real ``mitmdump`` where the proxy's own start-up is the point.
"""

from __future__ import annotations

import marshal
import os
import shutil
import subprocess
import sys
import time
import zlib
from dataclasses import fields
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from proxy_addon.matching.canonical import Rules
from proxy_addon.matching.normalize import compile_rules
from proxy_addon.redaction.secret_rules import Secrets
from proxy_addon.store import CassetteStore, LookupContext, index_cache
from proxy_addon.store.entries import Entry
from tests.conftest import CASSETTE, ROOT, SEED, TEST_ADDONS
from tests.keys import key_of

URL = "https://api.openai.com/v1/chat/completions"
STARTUP = TEST_ADDONS / "startup"  # sitecustomize: opens under a folder, a slow disk


def body(prompt: str, temperature: float = 0.5) -> dict[str, Any]:
    return {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": prompt}],
        "temperature": temperature,
    }


def write_cassette(folder: Path, name: str, prompt: str, temperature: float = 0.5) -> Path:
    """A cassette as the recorder lays it out (pretty-printed, in its endpoint's folder),
    written with plain orjson; its answer names its prompt."""
    doc = {
        "format": "llm-cassette",
        "version": 1,
        "request": {
            "method": "POST",
            "url": URL,
            "headers": {"authorization": "<redacted>", "content-type": "application/json"},
            "body": body(prompt, temperature),
        },
        "responses": [
            {
                "status": 200,
                "headers": [["content-type", "application/json"]],
                "body": {"answer": f"answer for {prompt}"},
            }
        ],
    }
    path = folder / "api.openai.com" / "v1" / "chat" / "completions" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    return path


def corpus(folder: Path, n: int) -> list[Path]:
    return [write_cassette(folder, f"gpt-4o-{i:04d}", f"p-{i:04d}") for i in range(n)]


def settle(folder: Path) -> None:
    """Wait until every file under ``folder`` changed long enough ago to be saved: a file's
    change time cannot be set back, so the clock is what is waited on."""
    paths = [p for p in folder.rglob("*") if p.is_file()]
    while not all(index_cache.settled(p.stat().st_ctime_ns, time.time_ns()) for p in paths):
        time.sleep(0.01)


def ask(client: httpx.Client, prompt: str) -> tuple[int, str]:
    r = client.post(URL.replace("https:", "http:"), json=body(prompt))
    return r.status_code, r.json().get("answer", "") if r.status_code == 200 else ""


def saved_index(cache: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The one saved index under ``cache``: its JSON header and its rows (``marshal``), read
    with the standard library."""
    (path,) = cache.glob("index-*")
    head, _, rest = path.read_bytes().partition(b"\n")
    return orjson.loads(head), marshal.loads(rest)


@pytest.fixture
def audited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every process started from here on logs each cassette it opens under ``tmp_path / 'c'``
    (tests/addons/startup/sitecustomize.py) to the returned file."""
    log = tmp_path / "opened.log"
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(STARTUP), os.environ.get("PYTHONPATH")]))
    )
    monkeypatch.setenv("OPEN_AUDIT_UNDER", str(tmp_path / "c"))
    monkeypatch.setenv("OPEN_AUDIT_LOG", str(log))
    return log


@pytest.mark.slow
def test_an_unchanged_folder_starts_from_the_saved_index_and_each_change_is_read(
    tmp_path, proxies, audited
):
    """Four starts of a real mitmdump over 40 cassettes. The first reads them all and saves the
    index; the second opens no cassette at start (the audit hook in the proxy process says so;
    the summary JSON says the saved index served all 40) and answers a request from the one file
    it then opens. Then a file is edited in place to the same size with its mtime set back to
    the nanosecond, two files of the same size are swapped, one is added, one removed: the third
    start reads those four alone and answers from what each file now holds. With the saved
    index cut in half, the fourth reads every file and answers rightly."""
    folder, cache, summary = tmp_path / "c", tmp_path / "cache", tmp_path / "summary.json"
    files = corpus(folder, 40)

    def run(*prompts: str) -> tuple[dict[str, Any], list[tuple[int, str]], list[str]]:
        audited.unlink(missing_ok=True)
        proxy = proxies(folder, cassette_index_cache=str(cache), cassette_summary=str(summary))
        with httpx.Client(proxy=proxy.url, timeout=20) as client:
            answers = [ask(client, p) for p in prompts]
        proxy.stop()
        opened = audited.read_text().splitlines() if audited.exists() else []
        return orjson.loads(summary.read_bytes())["indexing"], answers, opened

    indexing, answers, opened = run("p-0000")
    assert (indexing["files"], indexing["read"], indexing["from_cache"]) == (40, 40, 0)
    assert answers == [(200, "answer for p-0000")]
    assert len(set(opened)) == 40  # the audit sees the reads it is there to see
    header, rows = saved_index(cache)
    assert header["files"] == 40 and len(rows["paths"]) == 40

    indexing, answers, opened = run("p-0005")
    assert (indexing["files"], indexing["read"], indexing["from_cache"]) == (40, 0, 40)
    assert answers == [(200, "answer for p-0005")]
    assert opened == [str(files[5])], "a warm start opened cassettes"

    edited, swap_a, swap_b, removed = files[1], files[2], files[3], files[4]
    before = edited.stat()
    with open(edited, "r+b") as f:  # in place: the same inode, the same size
        data = f.read().replace(b"p-0001", b"p-9001")
        f.seek(0)
        f.write(data)
    os.utime(edited, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = edited.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )
    assert swap_a.stat().st_size == swap_b.stat().st_size
    temp = swap_a.with_name("swapping")
    swap_a.rename(temp)
    swap_b.rename(swap_a)
    temp.rename(swap_b)
    write_cassette(folder, "gpt-4o-added", "p-0100")
    removed.unlink()

    indexing, answers, _ = run("p-9001", "p-0001", "p-0002", "p-0003", "p-0100", "p-0004", "p-0006")
    assert answers == [
        (200, "answer for p-9001"),
        (424, ""),
        (200, "answer for p-0002"),
        (200, "answer for p-0003"),
        (200, "answer for p-0100"),
        (424, ""),
        (200, "answer for p-0006"),
    ]
    assert (indexing["files"], indexing["read"], indexing["from_cache"]) == (40, 4, 36)

    (saved,) = cache.glob("index-*")
    saved.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    indexing, answers, _ = run("p-9001", "p-0002")
    assert (indexing["files"], indexing["read"], indexing["from_cache"]) == (40, 40, 0)
    assert "ignored" in indexing["cache_state"] and indexing["cache_state"].endswith("saved")
    assert answers == [(200, "answer for p-9001"), (200, "answer for p-0002")]
    header, rows = saved_index(cache)  # rebuilt whole
    assert header["files"] == 40 and len(rows["paths"]) == 40


def test_entries_from_the_saved_index_equal_those_read_from_the_files(tmp_path):
    """Every field of every entry (whatever fields an entry holds) is restored as reading the
    file made it, in the same order, for files of several kinds."""
    folder, cache = tmp_path / "c", tmp_path / "cache"
    corpus(folder, 5)
    write_cassette(folder / "by-test" / "tests__test_app.py__test_one", "own", "p-own")
    shutil.copy(SEED, folder)  # a llama-stack recording
    settle(folder)

    def entries() -> tuple[list[dict[str, Any]], Any]:
        store = CassetteStore(folder, cache_folder=cache)
        store.load()
        return [
            {f.name: getattr(e, f.name) for f in fields(Entry) if f.name != "cache"}
            for e in store.index.all_entries()
        ], store.index.indexing

    read, cold = entries()
    restored, warm = entries()
    assert (cold.read, warm.from_cache, warm.read) == (7, 7, 0)
    assert restored == read
    assert {e["test_dir"] for e in read} == {None, "tests__test_app.py__test_one"}
    assert [e["from_llama_stack"] for e in read].count(True) == 1


def test_a_start_from_the_saved_index_answers_names_and_lists_as_reading_every_file_does(
    tmp_path,
):
    """A start from the saved index makes a file's entry only when something first needs it,
    so each use is checked on such a start. Its first request misses and still names the
    nearest recording; a test's own recording answers the test before the shared one of the
    same request; two files of one request, the first changed since the index was saved (read
    now, the other restored from its row), stay in the folder's order; after three hits on
    another start every other recording is listed unused. Expected files are the ones
    written, not the store's."""
    folder, cache = tmp_path / "c", tmp_path / "cache"
    files = corpus(folder, 8)
    test_dir = "tests__test_app.py__test_one"
    own = write_cassette(folder / "by-test" / test_dir, "gpt-4o-0001", "p-0001")
    twin = write_cassette(folder, "gpt-4o-0002b", "p-0002")  # after gpt-4o-0002 in its folder
    settle(folder)
    CassetteStore(folder, cache_folder=cache).load()  # saves the index
    doc = orjson.loads(files[2].read_bytes())
    doc["responses"][0]["body"]["answer"] = "changed"
    files[2].write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))

    def asked(prompt: str) -> Any:
        return key_of("POST", URL, "application/json", orjson.dumps(body(prompt)))

    def started() -> CassetteStore:
        store = CassetteStore(folder, cache_folder=cache)
        store.load()
        assert store.index.indexing.from_cache >= 9 and len(store) == 10
        return store

    store = started()
    assert store.index.indexing.read == 1
    miss = asked("p-0005 and more")
    assert store.lookup(miss) is None
    nearest = store.index.nearest(miss)
    assert nearest is not None
    assert (nearest[0].file, nearest[1]) == (str(files[5]), ["messages[0].content"])
    found = store.index.find(asked("p-0002"))
    assert found is not None and [e.file for e in found.entries] == [str(files[2]), str(twin)]

    store = started()  # no miss this time: the entries not asked for are never made
    hits = [
        store.lookup(asked("p-0001"), LookupContext(test_dir=test_dir)),
        store.lookup(asked("p-0001")),
        store.lookup(asked("p-0000")),
    ]
    assert [h.entry.file if h else None for h in hits] == [str(own), str(files[1]), str(files[0])]
    on_disk = {str(p) for p in folder.rglob("*.json")}
    assert sorted(store.index.unused()) == sorted(
        on_disk - {str(own), str(files[1]), str(files[0])}
    )


def test_a_file_changed_just_before_the_scan_is_read_and_not_saved(tmp_path):
    """A file changed within the clock tick of the scan could change again with every stat
    field the same: it is read, and left out of the saved index so that it is read again."""
    folder, cache = tmp_path / "c", tmp_path / "cache"
    old = corpus(folder, 3)
    settle(folder)
    fresh = write_cassette(folder, "fresh", "p-fresh")
    store = CassetteStore(folder, cache_folder=cache)
    store.load()
    assert store.lookup(key_of("POST", URL, "application/json", orjson.dumps(body("p-fresh"))))
    _, rows = saved_index(cache)
    assert {str(folder / p) for p in rows["paths"]} == {str(p) for p in old}
    assert fresh.exists()


@pytest.mark.parametrize("change", ["ignore", "normalize", "secret value"])
def test_other_matching_rules_ignore_the_saved_index(tmp_path, change):
    """The saved keys were made under the rules of their run: under other rules (an ignored
    path, a normaliser, a credential variable's value) every file is read again, and a request
    matches as those rules say (with the saved keys it would miss)."""
    folder, cache = tmp_path / "c", tmp_path / "cache"
    corpus(folder, 3)
    prompt = "today is 2026-11-26, code Xyzzy-Plugh-4242"
    write_cassette(folder, "dated", prompt, temperature=0.2)
    settle(folder)
    asked = body(prompt, temperature=0.9)
    before = Rules(ignore=(("temperature",),))
    if change == "ignore":
        before, after = Rules(), before
    elif change == "normalize":
        after = Rules(before.ignore, normalize=compile_rules(["dates"]))
        asked = body(prompt.replace("2026-11-26", "2027-01-02"), temperature=0.9)
    else:
        env = {"BENCH_API_KEY": "Xyzzy-Plugh-4242"}
        after = Rules(before.ignore, secrets=Secrets.from_settings(environ=env))
    first = CassetteStore(folder, before, cache_folder=cache)
    first.load()
    again = CassetteStore(folder, before, cache_folder=cache)
    again.load()
    assert again.index.indexing.from_cache == 4  # saved, and used under the same rules
    second = CassetteStore(folder, after, cache_folder=cache)
    second.load()
    canon = key_of(
        "POST",
        URL,
        "application/json",
        orjson.dumps(asked),
        ignore=after.ignore,
        secrets=after.secrets,
        normalize=after.normalize,
    )
    hit = second.lookup(canon)
    assert hit is not None and hit.entry.path.name == "dated.json"
    assert (second.index.indexing.read, second.index.indexing.from_cache) == (4, 0)


def test_a_saved_index_with_a_flipped_byte_is_ignored(tmp_path):
    """A byte changed inside the saved rows (here: one character of a saved key, which still
    parses) fails the checksum; the files are read, and their request still matches."""
    folder, cache = tmp_path / "c", tmp_path / "cache"
    corpus(folder, 3)
    settle(folder)
    CassetteStore(folder, cache_folder=cache).load()
    (path,) = cache.glob("index-*")
    raw = bytearray(path.read_bytes())
    header, _ = saved_index(cache)
    canon = key_of("POST", URL, "application/json", orjson.dumps(body("p-0001")))
    at = raw.index(canon.key().encode())
    raw[at] = ord("0") if raw[at] != ord("0") else ord("1")
    path.write_bytes(bytes(raw))
    assert zlib.crc32(bytes(raw).partition(b"\n")[2]) != header["crc32"]
    store = CassetteStore(folder, cache_folder=cache)
    store.load()
    assert store.lookup(canon) is not None
    assert (store.index.indexing.read, store.index.indexing.from_cache) == (3, 0)


def test_an_unwritable_cache_location_still_indexes_and_says_so(tmp_path):
    """A cache folder that cannot be made (here under a regular file; permissions do not stop
    root) costs only the saving: every file is indexed, and the reason is kept."""
    folder = tmp_path / "c"
    corpus(folder, 3)
    settle(folder)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    store = CassetteStore(folder, cache_folder=blocker / "index")
    store.load()
    assert len(store) == 3
    assert store.index.indexing.read == 3 and "not saved" in store.index.indexing.cache_state


def test_changed_code_ignores_the_saved_index(tmp_path):
    """The package's source is in the fingerprint: a copy of the package with one line changed
    (as an upgrade or a local edit of the key's code would) reads every file again."""
    folder, cache = tmp_path / "c", tmp_path / "cache"
    corpus(folder, 3)
    settle(folder)
    CassetteStore(folder, cache_folder=cache).load()
    warm = CassetteStore(folder, cache_folder=cache)
    warm.load()
    assert warm.index.indexing.from_cache == 3
    copy = tmp_path / "copy"
    shutil.copytree(ROOT / "proxy_addon", copy / "proxy_addon")
    canonical = copy / "proxy_addon" / "matching" / "canonical.py"
    canonical.write_text(canonical.read_text() + "\n# changed\n")
    script = (
        "import sys; from pathlib import Path; from proxy_addon.store import CassetteStore;"
        f"s = CassetteStore(Path({str(folder)!r}), cache_folder=Path({str(cache)!r})); s.load();"
        "import proxy_addon; print(proxy_addon.__file__, s.index.indexing.read,"
        " s.index.indexing.from_cache)"
    )
    env = dict(os.environ, PYTHONPATH=str(copy))
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == [str(canonical.parents[1] / "__init__.py"), "3", "0"]


@pytest.mark.slow
def test_a_slow_start_says_what_it_is_indexing_once(tmp_path, audited, monkeypatch):
    """Indexing that takes more than a second prints one line, which ``cassette run`` passes on
    while it waits: the disk is made slow (the first cassette opened waits 1.5 s; with the cache
    off every start reads the files). A quick start prints nothing of it; with the cache off
    nothing is saved."""
    folder = tmp_path / "c"
    corpus(folder, 3)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    def run(delay: str) -> str:
        monkeypatch.setenv("OPEN_AUDIT_DELAY", delay)
        done = subprocess.run(
            [CASSETTE, "run", "--dir", str(folder), "--set", "cassette_index_cache=off"]
            + ["--", "true"],
            capture_output=True,
            text=True,
        )
        assert "cassette summary: 0 hits" in done.stderr, done.stderr
        return done.stderr

    lines = [line for line in run("1.5").splitlines() if "indexing" in line]
    assert lines == [f"cassette: indexing 3 recordings in {folder}…"]
    assert "indexing" not in run("0")
    assert not (tmp_path / "xdg").exists()
