"""scripts/bench, start-up and scale: a folder of N recordings as the recorder writes them
(``bench_corpus``), from a proxy's start to its first answer with and without the saved index,
indexing in-process per file, memory, latency and our own work per request at each size, and
``cassette run -- true`` against ``mitmdump --version``."""

from __future__ import annotations

import gc
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from bench_corpus import Ask, Recorded, file_sizes, write_corpus

from proxy_addon.runner.process import RunningProxy, mitmdump_executable, start_proxy

Row = tuple[str, str, str, str]


def rss_mb(proxy: RunningProxy) -> float:
    with open(f"/proc/{proxy.process.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc")


def send(client: httpx.Client, ask: Ask, status: int = 200) -> httpx.Response:
    r = client.request(ask.method, ask.url, content=ask.content, headers=ask.headers)
    r.read()
    assert r.status_code == status, r.text[:300]
    return r


def first_answer(
    directory: Path, confdir: Path, ask: Ask | None, cache: Path | None, status: int = 200
) -> tuple[RunningProxy, float]:
    """A replay proxy over ``directory`` (its index saved in ``cache``, or never), and the
    seconds from its start to its first answer (to listening, when there is nothing to ask);
    ``status``: the answer's (424: a miss, the first answer an empty folder gives)."""
    options = {"cassette_index_cache": str(cache) if cache else "off"}
    start = time.perf_counter()
    p = start_proxy(directory, "replay", confdir=confdir, options=options, timeout=120)
    if ask is not None:
        with httpx.Client(proxy=p.url, timeout=60) as client:
            send(client, ask, status)
    return p, time.perf_counter() - start


def latency(proxy: RunningProxy, asks: list[Ask]) -> float:
    """Median seconds per request over ``asks``, after a first pass that reads and frames each
    asked recording once (the work a run does once per recording)."""
    with httpx.Client(proxy=proxy.url, timeout=30) as client:
        for ask in asks:
            send(client, ask)
        times = []
        for ask in asks:
            s = time.perf_counter()
            send(client, ask)
            times.append(time.perf_counter() - s)
    return statistics.median(times)


def asks_for(templates: list[Recorded], n: int, k: int) -> list[Ask]:
    """``k`` requests for copies drawn at random among ``n``."""
    picked = random.Random(n).choices(range(n), k=k)
    return [templates[i % len(templates)].request(i) for i in picked]


def corpus_rows(templates: list[Recorded], sizes: list[int], work: Path) -> list[Row]:
    """What the corpora hold: the templates, and each size's files and bytes."""
    rows = [
        (
            f"corpus, {n:,} recordings: {files:,} files, {total / 1e6:.0f} MB, "
            f"{total / files / 1000:.1f} kB a file",
            "",
            "",
            "",
        )
        for n in sizes
        for files, total in [file_sizes(work / f"n{n}")]
    ]
    kinds = ", ".join(f"{t.name} ({len(t.raw) / 1000:.1f} kB)" for t in templates)
    return [
        (f"templates, recorded through mitmdump and copied in turn: {kinds}", "", "", "")
    ] + rows


def bench_scale(
    confdir: Path,
    sizes: list[int],
    rounds: int,
    samples: int,
    work: Path,
    templates: list[Recorded],
) -> list[Row]:
    """Empty folder, then each size: start to first answer without a saved index (a fresh cache
    folder each time) and with one (saved by a start before), memory, latency."""
    empty = work / "empty"
    empty.mkdir()
    first = templates[0].request(0)
    listening, answered, idle = [], [], []
    for _ in range(rounds):  # in turn: noise hits both
        p, t = first_answer(empty, confdir, None, None)
        listening.append(t)
        idle.append(rss_mb(p))
        p.stop()
        p, t = first_answer(empty, confdir, first, None, status=424)
        answered.append(t)
        p.stop()
    base_start, base_rss = statistics.median(answered), statistics.median(idle)
    to_listening = statistics.median(listening)
    rows = [
        ("start-up, empty directory (to listening)", f"{to_listening:.2f} s", "", ""),
        (
            "start-up to the first answer, empty directory (the same request: a miss, 424)",
            f"{base_start:.2f} s",
            "",
            "",
        ),
        ("resident memory, empty directory", f"{base_rss:.0f} MB", "", ""),
    ]
    latencies: dict[int, float] = {}
    for n in sizes:
        folder = work / f"n{n}"
        if not folder.exists():
            write_corpus(folder, templates, n)
        warm_cache = work / f"cache-{n}"
        first_answer(folder, confdir, first, warm_cache)[0].stop()  # saves the index
        cold, warm, lats, rss = [], [], [], []
        for r in range(rounds):  # in turn: noise hits both
            p, t = first_answer(folder, confdir, first, work / f"cache-{n}-cold-{r}")
            cold.append(t)
            p.stop()
            p, t = first_answer(folder, confdir, first, warm_cache)
            warm.append(t)
            lats.append(latency(p, asks_for(templates, n, samples)))
            rss.append(rss_mb(p))
            p.stop()
        latencies[n] = statistics.median(lats) * 1000
        grown = statistics.median(rss) - base_rss
        cold_s, warm_s = statistics.median(cold), statistics.median(warm)
        rows += [
            (
                f"start-up to the first replayed answer, {n:,} recordings, no saved index",
                f"{cold_s:.2f} s",
                f"{base_start:.2f} s (empty)",
                f"+{cold_s - base_start:.2f} s, {(cold_s - base_start) / n * 1e6:.0f} µs a file",
            ),
            (
                f"start-up to the first replayed answer, {n:,} recordings, saved index",
                f"{warm_s:.2f} s",
                f"{base_start:.2f} s (empty)",
                f"+{warm_s - base_start:.2f} s",
            ),
            (
                f"resident memory replaying, {n:,} recordings",
                f"{statistics.median(rss):.0f} MB",
                f"{base_rss:.0f} MB (empty)",
                # a few MB of noise would read as KB a recording in a small directory
                f"+{grown * 1024 / n:.2f} KB a recording" if n >= 10_000 else f"+{grown:.0f} MB",
            ),
        ]
    small = latencies[min(sizes)]
    rows += [
        (
            f"replay latency per request, {n:,} recordings",
            f"{latencies[n]:.2f} ms",
            f"{small:.2f} ms ({min(sizes):,} recordings)",
            f"{latencies[n] / small:.2f}x",
        )
        for n in sizes
    ]
    return rows


def bench_indexing(sizes: list[int], work: Path, rounds: int) -> list[Row]:
    """Indexing in this process, the garbage collector paused as mitmdump pauses it: reading
    every file (no saved index), and from the saved index; per file. Each with the processes a
    load forks (``store/fanout.py``: as many as the CPUs) and with this process alone."""
    from proxy_addon.store import CassetteStore
    from proxy_addon.store.fanout import processes

    def load(folder: Path, cache: Path | None, alone: bool) -> float:
        gc.disable()
        try:
            store = CassetteStore(folder, cache_folder=cache, processes=1 if alone else None)
            start = time.perf_counter()
            store.load()
            return time.perf_counter() - start
        finally:
            gc.enable()
            del store
            gc.collect()

    rows = []
    cpus = processes()
    for n in [s for s in sizes if s >= 10_000]:
        folder, cache = work / f"n{n}", work / f"cache-{n}-inprocess"
        load(folder, cache, False)
        for alone, who in ((False, f"{cpus} processes"), (True, "one process")):
            cold = statistics.median(load(folder, None, alone) for _ in range(rounds))
            warm = statistics.median(load(folder, cache, alone) for _ in range(rounds))
            rows += [
                (
                    f"indexing in-process, {n:,} recordings, reading every file, {who}",
                    f"{cold:.2f} s",
                    "",
                    f"{cold / n * 1e6:.1f} µs a file",
                ),
                (
                    f"indexing in-process, {n:,} recordings, from the saved index, {who}",
                    f"{warm:.2f} s",
                    "",
                    f"{warm / n * 1e6:.1f} µs a file",
                ),
            ]
    return rows


def bench_lookup(
    sizes: list[int], work: Path, templates: list[Recorded], requests: int = 2000
) -> list[Row]:
    """Our own work per replayed request, in this process: canonicalise, look up, answer (the
    response the replay hook hands mitmproxy)."""
    from proxy_addon.matching import canonical
    from proxy_addon.mitm.replay import replayed_response
    from proxy_addon.store import CassetteStore

    costs: dict[int, float] = {}
    for n in sizes:
        store = CassetteStore(work / f"n{n}")
        store.load()
        asks = asks_for(templates, n, requests)

        def serve() -> None:  # called below, in this iteration
            for ask in asks:  # noqa: B023
                request = canonical.Request.from_url(
                    ask.method, ask.url, ask.headers.get("content-type"), ask.content
                )
                hit = store.lookup(canonical.canonicalize(request))  # noqa: B023
                assert hit is not None
                replayed_response(hit.response)

        serve()  # read and frame each answer once
        runs = []
        for _ in range(5):
            start = time.perf_counter()
            serve()
            runs.append((time.perf_counter() - start) / len(asks) * 1e6)
        costs[n] = statistics.median(runs)
    small = costs[min(sizes)]
    return [
        (
            f"our work per request (canonicalise, look up, answer), {n:,} recordings",
            f"{costs[n]:.1f} µs",
            f"{small:.1f} µs ({min(sizes):,} recordings)",
            f"{costs[n] / small:.2f}x",
        )
        for n in sizes
    ]


def bench_run_overhead(work: Path, rounds: int, baseline_addon: Path) -> list[Row]:
    """``cassette run -- true`` over an empty folder against ``mitmdump --version`` (Python
    and mitmproxy's imports: the floor of any run), and mitmproxy with a trivial addon started
    (a fresh CA, as a run makes) and stopped as a run does: what is left is ours. In turn."""
    cassette = str(Path(sys.executable).with_name("cassette"))
    folder = work / "run-empty"
    folder.mkdir()
    table = work / "run-no-responses.json"
    table.write_text("{}")
    ours, floor, bare = [], [], []
    for r in range(rounds):
        start = time.perf_counter()
        subprocess.run([mitmdump_executable(), "--version"], capture_output=True, check=True)
        floor.append(time.perf_counter() - start)
        start = time.perf_counter()
        subprocess.run(
            [cassette, "run", "--dir", str(folder), "--", "true"], capture_output=True, check=True
        )
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        start_proxy(
            folder,
            script=baseline_addon,
            confdir=work / f"run-ca-{r}",
            options={"bench_responses": str(table)},
        ).stop()
        bare.append(time.perf_counter() - start)
    o, f, b = statistics.median(ours), statistics.median(floor), statistics.median(bare)
    return [
        (
            "`cassette run -- true`, empty folder",
            f"{o:.2f} s",
            f"{f:.2f} s (`mitmdump --version`)",
            f"+{o - f:.2f} s",
        ),
        (
            "mitmproxy with a trivial addon, started to listening and stopped (fresh CA)",
            f"{b:.2f} s",
            f"{f:.2f} s (`mitmdump --version`)",
            f"+{b - f:.2f} s",
        ),
        (
            "`cassette run -- true`, over the trivial addon's start and stop",
            f"{o:.2f} s",
            f"{b:.2f} s (trivial addon)",
            f"+{o - b:.2f} s",
        ),
    ]
