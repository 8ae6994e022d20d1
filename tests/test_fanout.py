"""A load shared with forked processes (``store/fanout.py``) is the load of this process alone:
the same entries in the same order, the same bad files and warnings, the same saved index, on
real files; and a child that dies, fails or hangs costs time, never an item."""

from __future__ import annotations

import logging
import marshal
import os
import shutil
import signal
import socket
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from proxy_addon.store import CassetteStore, fanout
from proxy_addon.store.entries import Entry
from proxy_addon.store.index import READS_PER_PROCESS
from proxy_addon.store.index_cache import IndexCache, _Checked, _checker
from tests.conftest import SEED, wait_until
from tests.test_index_cache import ask, corpus, settle, write_cassette

PARENT = os.getpid()


def doubled(chunk: range) -> list[tuple[int, bool]]:
    """Each item doubled, with whether a child did it."""
    return [(x * 2, os.getpid() != PARENT) for x in chunk]


def fails_in_a_child(how: str) -> Any:
    def work(chunk: range) -> list[tuple[int, bool]]:
        if os.getpid() != PARENT:
            if how == "dies":
                os._exit(3)
            if how == "raises":
                raise RuntimeError("a child's work failed")
            if how == "hangs":
                time.sleep(3600)
            if how == "is killed":
                os.kill(os.getpid(), 9)
        return doubled(chunk)

    return work


def test_the_work_is_shared_in_order_and_each_child_does_its_chunk():
    results = fanout.fan_out(range(100), doubled, 10, 4, encode=marshal.dumps, decode=marshal.loads)
    assert [len(r) for r in results] == [25, 25, 25, 25]
    assert [x for r in results for x, _ in r] == [x * 2 for x in range(100)]
    # the first chunk is this process's, the others were each done by a child
    assert [{by_child for _, by_child in r} for r in results] == [{False}, {True}, {True}, {True}]


def test_too_few_items_for_a_second_process_are_worked_here():
    assert fanout.fan_out(
        range(19), doubled, 10, 4, encode=marshal.dumps, decode=marshal.loads
    ) == [[(x * 2, False) for x in range(19)]]


@pytest.mark.parametrize("how", ["dies", "raises", "hangs", "is killed"])
def test_a_child_that_fails_costs_time_never_an_item(how):
    """Its chunk is worked here: every item, in order; a child that hangs is killed at the limit."""
    started = time.monotonic()
    results = fanout.fan_out(
        range(100),
        fails_in_a_child(how),
        10,
        4,
        encode=marshal.dumps,
        decode=marshal.loads,
        limit_s=0.5,
    )
    assert [x for r in results for x, _ in r] == [x * 2 for x in range(100)]
    assert not any(by_child for r in results for _, by_child in r)
    assert time.monotonic() - started < 20  # the hung child was not waited for (3600 s)


def test_a_signal_to_a_child_ends_it_and_never_reaches_this_process():
    """A child is not this process: SIGTERM ends it (its chunk is worked here), this process's
    handler does not run in it, and nothing reaches the wake-up descriptor this process shares
    with it (an asyncio loop's: mitmdump would take the child's signal for its own)."""
    heard: list[int] = []
    wake_read, wake_write = socket.socketpair()
    wake_read.setblocking(False)
    wake_write.setblocking(False)
    previous = signal.signal(signal.SIGTERM, lambda number, frame: heard.append(number))
    old_fd = signal.set_wakeup_fd(wake_write.fileno())
    try:

        def work(chunk: range) -> list[tuple[int, bool]]:
            if os.getpid() != PARENT:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.5)  # a signal handled in Python would let it go on after this
            return doubled(chunk)

        results = fanout.fan_out(range(40), work, 10, 2, encode=marshal.dumps, decode=marshal.loads)
    finally:
        signal.set_wakeup_fd(old_fd)
        signal.signal(signal.SIGTERM, previous)
    assert [x for r in results for x, _ in r] == [x * 2 for x in range(40)]
    assert not any(by_child for r in results for _, by_child in r)
    assert heard == []
    try:
        woken = wake_read.recv(16)
    except BlockingIOError:
        woken = b""
    wake_read.close()
    wake_write.close()
    assert woken == b""


def test_no_child_outlives_a_load_whose_own_share_fails(tmp_path):
    """This process's share raises (or is interrupted): the children, still working, are killed
    and reaped before the error goes on; none is left running or a zombie."""
    pids = tmp_path / "pids"

    def work(chunk: range) -> list[tuple[int, bool]]:
        if os.getpid() != PARENT:
            with open(pids, "a") as f:
                f.write(f"{os.getpid()}\n")
            time.sleep(3600)
        wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 3, "3 children")
        raise RuntimeError("this process's share failed")

    with pytest.raises(RuntimeError, match="share failed"):
        fanout.fan_out(range(40), work, 10, 4, encode=marshal.dumps, decode=marshal.loads)
    left = []
    for pid in map(int, pids.read_text().split()):
        try:
            os.waitpid(pid, os.WNOHANG)  # ours and not reaped: still running, or a zombie
        except ChildProcessError:
            continue
        left.append(pid)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert left == []


def mixed_folder(folder: Path, n: int) -> None:
    """``n`` cassettes, a per-test one, a llama-stack recording, two recordings of one request,
    and bad files (broken JSON, not a cassette) in the last process's share."""
    corpus(folder, n)
    write_cassette(folder / "by-test" / "tests__test_app.py__test_one", "own", "p-own")
    shutil.copy(SEED, folder)
    write_cassette(folder, "gpt-4o-9999-again", "p-0007")
    last = folder / "api.openai.com" / "v1" / "chat" / "completions"
    (last / "zz-broken.json").write_text('{"version": 1, "request": {"method": "POST"')
    (last / "zz-not-a-cassette.json").write_text('{"hello": "world"}')


def loaded(
    folder: Path, processes: int, cache: Path | None, caplog: pytest.LogCaptureFixture
) -> tuple[list[dict[str, Any]], list[tuple[str, str, str | None]], list[str], Any, float]:
    """The entries (every field), bad files and warnings of a load, its indexing, and the CPU
    time its children used (seconds)."""
    caplog.clear()
    before = os.times()
    with caplog.at_level(logging.WARNING):
        store = CassetteStore(folder, cache_folder=cache, processes=processes)
        store.load()
    after = os.times()
    entries = [
        {f.name: getattr(e, f.name) for f in fields(Entry) if f.name != "cache"}
        for e in store.index.all_entries()
    ]
    bad = [(str(b.path), b.reason, b.key) for b in store.index.bad]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    children = (after.children_user + after.children_system) - (
        before.children_user + before.children_system
    )
    return entries, bad, warnings, store.index.indexing, children


def test_a_load_shared_with_forked_processes_is_the_load_of_one_process(tmp_path, caplog):
    """Reading every file, then from the saved index after four changes (one edited, one
    removed, one added, one broken), the load that forks gives what this process alone gives:
    every entry with every field in the walk's order, the bad files and their warnings, the
    counts, and the very bytes of the saved index. The children did work (their CPU time)."""
    folder = tmp_path / "c"
    n = 2 * READS_PER_PROCESS + 500  # the reads are shared (the stats of so few are not)
    mixed_folder(folder, n)
    settle(folder)
    alone, shared = tmp_path / "cache-alone", tmp_path / "cache-shared"

    def both(expect_children: bool) -> Any:
        one = loaded(folder, 1, alone, caplog)
        two = loaded(folder, 2, shared, caplog)
        assert two[:3] == one[:3]
        assert (two[3].files, two[3].read, two[3].from_cache) == (
            one[3].files,
            one[3].read,
            one[3].from_cache,
        )
        (saved_alone,) = alone.glob("index-*")
        (saved_shared,) = shared.glob("index-*")
        assert saved_shared.read_bytes() == saved_alone.read_bytes()
        assert one[4] == 0
        if expect_children:
            assert two[4] > 0
        return two

    entries, bad, warnings, indexing, _ = both(expect_children=True)
    assert len(entries) == n + 3 and indexing.read == n + 5
    assert [e["test_dir"] for e in entries].count("tests__test_app.py__test_one") == 1
    assert [e["from_llama_stack"] for e in entries].count(True) == 1
    assert len({e["key"] for e in entries}) == n + 2  # the request recorded twice
    assert [Path(b).name for b, _, _ in bad] == ["zz-broken.json", "zz-not-a-cassette.json"]
    assert len(warnings) == 2 and all("skipping" in w for w in warnings)

    files = sorted(folder.rglob("gpt-4o-*.json"))
    write_cassette(folder, files[10].stem, "p-edited")
    files[-10].unlink()
    write_cassette(folder, "gpt-4o-added", "p-added")
    files[-20].write_text("{")
    settle(folder)
    entries, bad, warnings, indexing, _ = both(expect_children=False)
    # the edited, added and broken files, and the two bad ones (never saved)
    assert (indexing.read, indexing.from_cache) == (5, n)
    assert any(e["file"].endswith("gpt-4o-added.json") for e in entries)
    assert len(bad) == 3 and len(warnings) == 3


def test_the_stats_checked_by_several_processes_are_those_one_process_checks(tmp_path):
    """The check of each file against the saved rows (its row, or changed, and its stamp),
    shared among processes and joined, equals the check of one process, changed files in
    every share."""
    folder, cache = tmp_path / "c", tmp_path / "cache"
    files = corpus(folder, 400)
    settle(folder)
    CassetteStore(folder, cache_folder=cache, processes=1).load()
    for path in files[::50]:
        write_cassette(folder, path.stem, "p-changed-" + path.stem)
    files[7].unlink()
    write_cassette(folder, "gpt-4o-added", "p-added")
    (saved_file,) = cache.glob("index-*")
    walk = sorted(str(p) for p in folder.rglob("*.json"))
    store = CassetteStore(folder, cache_folder=cache)
    saved = store.index._saved_index()
    rows, state = saved.read()
    assert state == "read"
    check = _checker(walk, len(str(folder)) + 1, rows)
    alone = check(range(len(walk)))
    shared = _Checked.joined(
        fanout.fan_out(
            range(len(walk)),
            check,
            100,
            4,
            encode=_Checked.to_bytes,
            decode=_Checked.from_bytes,
        )
    )
    assert [list(a) for a in shared.arrays()] == [list(a) for a in alone.arrays()]
    assert list(alone.rows).count(-1) == 9 and len(alone.changed.sizes) == 9
    assert saved_file.exists() and isinstance(saved, IndexCache)


def children_cpu_ticks(pid: int) -> int:
    """The CPU time (clock ticks) of the children a process has waited for: /proc/PID/stat's
    cutime and cstime."""
    after_name = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(after_name[13]) + int(after_name[14])


def test_a_proxy_shares_its_first_read_with_forked_processes_and_answers_from_every_share(
    tmp_path, proxies
):
    """A real mitmdump over 2,500 cassettes, no saved index yet: its children did part of the
    reading (their CPU time, in /proc), every share answers (first, middle, last file), a miss
    is a miss, and the index it saved serves the next start whole."""
    folder, cache, summary = tmp_path / "c", tmp_path / "cache", tmp_path / "summary.json"
    n = 2 * READS_PER_PROCESS + 500
    corpus(folder, n)
    settle(folder)
    asked = ["p-0000", f"p-{n // 2:04d}", f"p-{n - 1:04d}", "p-missing"]
    expected = [(200, f"answer for {p}") for p in asked[:3]] + [(424, "")]

    def run() -> tuple[dict[str, Any], list[tuple[int, str]], int]:
        proxy = proxies(folder, cassette_index_cache=str(cache), cassette_summary=str(summary))
        ticks = children_cpu_ticks(proxy.process.pid)
        with httpx.Client(proxy=proxy.url, timeout=20) as client:
            answers = [ask(client, p) for p in asked]
        proxy.stop()
        return orjson.loads(summary.read_bytes())["indexing"], answers, ticks

    indexing, answers, ticks = run()
    assert answers == expected
    assert (indexing["files"], indexing["read"]) == (n, n)
    assert ticks > 0
    indexing, answers, _ = run()
    assert answers == expected
    assert (indexing["read"], indexing["from_cache"]) == (0, n)
