"""scripts/bench: the proxy's costs, each measured against a baseline in the same run.

- replay throughput, plain and streamed (16, 64, 256 events, recorded headers), against
  mitmproxy answering the same bytes from memory with a trivial addon;
- record: time to first event and whole stream, against the upstream directly and against
  mitmproxy passing the stream on with a trivial addon;
- start-up and scale (``bench_startup``), over 100 / 10,000 / 100,000 recordings as the recorder
  writes them (``bench_corpus``): time to the first replayed answer with and without the saved
  index, indexing per file in-process, resident memory, latency per request, our own work per
  request; ``cassette run -- true`` against ``mitmdump --version``;
- paced replay of 64 concurrent streams: each event's lateness against its recorded offset;
- memory recording one 53 MB stream;
- where a streamed replay spends its time (py-spy, when installed beside Python).

Medians of several runs; a baseline and ours alternate so that machine noise hits both (a
throughput ratio is the median of each run's ratio to the baseline run beside it). Prints a
markdown table with the date and the machine, to paste into the README.
"""

from __future__ import annotations

import asyncio
import base64
import compileall
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import click
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_corpus import record_templates  # noqa: E402
from bench_scenarios import URL, chat_recording  # noqa: E402
from bench_startup import (  # noqa: E402
    bench_indexing,
    bench_lookup,
    bench_run_overhead,
    bench_scale,
    corpus_rows,
)

from proxy_addon.formats import cassette  # noqa: E402
from proxy_addon.runner.process import RunningProxy, start_proxy  # noqa: E402
from proxy_addon.serving.wire import wire_body, wire_headers  # noqa: E402
from tests.upstream import FakeUpstreamServer, read_big_stream  # noqa: E402

BASELINE = ROOT / "scripts" / "bench_baseline_addon.py"
Row = tuple[str, str, str, str]


def post_all(client: httpx.Client, payload: bytes, requests: int) -> float:
    """Sequential keep-alive requests per second (after a warm-up)."""
    headers = {"content-type": "application/json"}
    for _ in range(20):
        client.post(URL, content=payload, headers=headers).read()
    start = time.perf_counter()
    for _ in range(requests):
        r = client.post(URL, content=payload, headers=headers)
        r.read()
        assert r.status_code == 200, r.text[:300]
    return requests / (time.perf_counter() - start)


def cpu_seconds(proxy: RunningProxy) -> float:
    """The proxy process's CPU time so far (user and system)."""
    with open(f"/proc/{proxy.process.pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(proxy: RunningProxy, body: dict[str, Any], requests: int) -> tuple[float, float]:
    """Requests a second, and the proxy's CPU time per request in µs (less moved by what else
    runs on the machine than the rate is)."""
    with httpx.Client(proxy=proxy.url, timeout=30) as client:
        before = cpu_seconds(proxy)
        rate = post_all(client, json.dumps(body).encode(), requests)
        return rate, (cpu_seconds(proxy) - before) / (requests + 20) * 1e6


def bench_replay(confdir: Path, rounds: int, requests: int) -> list[Row]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for events in (0, 16, 64, 256):
            kind = f"streamed, {events} events" if events else "plain"
            rec = chat_recording(f"bench {kind}", events)
            cassettes = Path(tmp) / f"c{events}"
            cassettes.mkdir()
            (cassettes / "c.json").write_bytes(cassette.dumps(rec))
            resp = rec.responses[0]
            table = Path(tmp) / f"fixed{events}.json"
            table.write_text(
                json.dumps(
                    {
                        "/v1/chat/completions": {
                            "status": resp.status,
                            "headers": [[k.decode(), v.decode()] for k, v in wire_headers(resp)],
                            "body": base64.b64encode(wire_body(resp)).decode(),
                        }
                    }
                )
            )
            ours: list[tuple[float, float]] = []
            base: list[tuple[float, float]] = []
            baseline = start_proxy(
                tmp, script=BASELINE, confdir=confdir, options={"bench_responses": str(table)}
            )
            replay = start_proxy(cassettes, "replay", confdir=confdir)
            for _ in range(rounds):  # the two proxies in turn
                base.append(throughput(baseline, rec.request.body.value, requests))
                ours.append(throughput(replay, rec.request.body.value, requests))
            baseline.stop()
            replay.stop()
            # each run's ratio to the baseline run just before it: the machine's drift between
            # runs (±5% here) cancels out, which a ratio of the two medians would keep
            ratio = statistics.median(o[0] / b[0] for o, b in zip(ours, base))
            rate_ours = statistics.median(o[0] for o in ours)
            rate_base = statistics.median(b[0] for b in base)
            cpu_ours = statistics.median(o[1] for o in ours)
            cpu_base = statistics.median(b[1] for b in base)
            rows += [
                (  # both ratios: the medians' may differ from the pairs' (they are other runs)
                    f"replay throughput, {kind}",
                    f"{rate_ours:.0f} req/s",
                    f"{rate_base:.0f} req/s (mitmproxy, fixed bytes)",
                    f"{rate_ours / rate_base:.2f}x of the medians; {ratio:.2f}x median of pairs",
                ),
                (
                    f"replay, the proxy's CPU time per request, {kind}",
                    f"{cpu_ours:.0f} µs",
                    f"{cpu_base:.0f} µs (mitmproxy, fixed bytes)",
                    f"+{cpu_ours - cpu_base:.0f} µs, {cpu_base / cpu_ours:.2f}x",
                ),
            ]
    return rows


def stream_timing(client: httpx.Client, url: str, prompt: str) -> tuple[float, float]:
    start = time.perf_counter()
    first = None
    with client.stream(
        "POST",
        url,
        json={"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": prompt}]},
    ) as r:
        for _ in r.iter_bytes():
            if first is None:
                first = time.perf_counter() - start
    return first or 0.0, time.perf_counter() - start


def bench_record(confdir: Path, runs: int) -> list[Row]:
    """A stream from a local upstream (12 events, 5 ms apart): direct, through mitmproxy passing
    it on with a trivial addon, and through our recording proxy (which also writes it)."""
    upstream = FakeUpstreamServer().start()
    upstream.state.event_delay = 0.005
    url = upstream.base_url + "/v1/chat/completions"
    timings: dict[str, list[tuple[float, float]]] = {"direct": [], "bare": [], "record": []}
    with tempfile.TemporaryDirectory() as tmp:
        bare = start_proxy(tmp, script=BASELINE, confdir=confdir, options={"bench_stream": "true"})
        rec = start_proxy(Path(tmp) / "c", "record", confdir=confdir)
        with (
            httpx.Client(timeout=30) as direct,
            httpx.Client(proxy=bare.url, timeout=30) as via_bare,
            httpx.Client(proxy=rec.url, timeout=30) as via_rec,
        ):
            clients = {"direct": direct, "bare": via_bare, "record": via_rec}
            for name, client in clients.items():  # warm up every path
                for i in range(3):
                    stream_timing(client, url, f"warm {name} {i}")
            for i in range(runs):  # interleaved, so noise hits all three alike
                for name, client in clients.items():
                    timings[name].append(stream_timing(client, url, f"{name} {i}"))
        bare.stop()
        rec.stop()
    upstream.stop()
    first = {k: statistics.median(t[0] for t in v) * 1000 for k, v in timings.items()}
    total = {k: statistics.median(t[1] for t in v) * 1000 for k, v in timings.items()}
    return [
        (
            "record: time to first event",
            f"{first['record']:.2f} ms",
            f"{first['direct']:.2f} ms (direct)",
            f"+{first['record'] - first['direct']:.2f} ms",
        ),
        (
            "mitmproxy passing the stream on (trivial addon): first event",
            f"{first['bare']:.2f} ms",
            f"{first['direct']:.2f} ms (direct)",
            f"+{first['bare'] - first['direct']:.2f} ms",
        ),
        (
            "record: first event, ours against mitmproxy passing it on",
            f"{first['record']:.2f} ms",
            f"{first['bare']:.2f} ms (mitmproxy)",
            f"+{first['record'] - first['bare']:.2f} ms",
        ),
        (
            "record: whole stream",
            f"{total['record']:.1f} ms",
            f"{total['bare']:.1f} ms (mitmproxy)",
            f"{total['record'] / total['bare']:.2f}x",
        ),
    ]


async def _paced_clients(
    url: str, body: dict[str, Any], clients: int, gap: float, stagger: float = 0.0
) -> tuple[list[float], list[float]]:
    """Per event, in ms: its arrival minus its recorded offset, less the stream's own lag (the
    median of those over its events); and per stream, that lag from the request's start. The
    i-th client starts ``i * stagger`` seconds after the first."""
    jitter: list[float] = []
    lags: list[float] = []

    async def one(client: httpx.AsyncClient, i: int) -> None:
        await asyncio.sleep(i * stagger)
        sent = time.perf_counter()
        arrivals: list[float] = []
        async with client.stream("POST", URL, json=body) as r:
            buffer = b""
            async for chunk in r.aiter_bytes():
                arrived = time.perf_counter()
                buffer += chunk
                while b"\n\n" in buffer:
                    _, buffer = buffer.split(b"\n\n", 1)
                    arrivals.append(arrived - sent - gap * len(arrivals))
        lag = statistics.median(arrivals)
        lags.append(lag * 1000)
        jitter.extend((a - lag) * 1000 for a in arrivals)

    async with httpx.AsyncClient(
        proxy=url, timeout=60, limits=httpx.Limits(max_connections=clients)
    ) as client:
        await asyncio.gather(*(one(client, i) for i in range(clients)))
    return jitter, lags


def bench_paced(confdir: Path, clients: int = 64, gap: float = 0.025) -> list[Row]:
    """64 streams at once, each 40 events 25 ms apart, replayed at cassette_pace=1; then the
    same streams started 10 ms apart (all 64 still overlap), which tells the pacer's own
    precision from the cost of 64 connections set up in the same instant."""
    rec = chat_recording("paced", 40, gap=gap)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "c.json").write_bytes(cassette.dumps(rec))
        p = start_proxy(tmp, "replay", confdir=confdir, options={"cassette_pace": "1"})
        jitter, lags = asyncio.run(_paced_clients(p.url, rec.request.body.value, clients, gap))
        staggered, _ = asyncio.run(
            _paced_clients(p.url, rec.request.body.value, clients, gap, stagger=0.010)
        )
        p.stop()
    events = len(rec.responses[0].stream.events)
    off = sorted(abs(j) for j in jitter)
    steady = sorted(abs(j) for k, j in enumerate(jitter) if k % events >= 3)
    lags.sort()

    def spread(values: list[float]) -> str:
        return (
            f"{values[len(values) // 2]:.1f} / {values[int(0.99 * len(values))]:.1f} / "
            f"{values[-1]:.1f} ms"
        )

    return [
        (
            f"paced replay, {clients} concurrent streams: event off its recorded offset, "
            "p50 / p99 / max",
            spread(off),
            f"{len(off)} events",
            "",
        ),
        (
            "the same, from each stream's 4th event on (its first 3 arrive while the other "
            "streams' connections are set up)",
            spread(steady),
            f"{len(steady)} events",
            "",
        ),
        (
            f"paced replay, {clients} concurrent streams: stream start, median / max",
            f"{lags[len(lags) // 2]:.1f} / {lags[-1]:.1f} ms",
            "",
            "",
        ),
        (
            f"paced replay, {clients} overlapping streams started 10 ms apart: event off its "
            "recorded offset, p50 / p99 / max",
            spread(sorted(abs(j) for j in staggered)),
            f"{len(staggered)} events",
            "",
        ),
    ]


def bench_memory_record(confdir: Path) -> Row:
    upstream = FakeUpstreamServer().start()
    with tempfile.TemporaryDirectory() as tmp:
        p = start_proxy(Path(tmp) / "c", "record", confdir=confdir)
        before = p.peak_rss_mb()
        size = read_big_stream(p.url, upstream.base_url)
        while not any(Path(tmp, "c").rglob("*.json")):  # written: the scrub's peak is past
            time.sleep(0.05)
        after = p.peak_rss_mb()
        p.stop()
    upstream.stop()
    return (
        f"peak RSS recording one {size / 1048576:.0f} MB stream",
        f"{after:.0f} MB",
        f"{before:.0f} MB (idle proxy)",
        f"+{after - before:.0f} MB",
    )


def profile_streamed(confdir: Path, seconds: int = 6) -> list[str]:
    """The top frames of a py-spy profile of mitmdump replaying a 16-event stream."""
    py_spy = Path(sys.executable).with_name("py-spy")
    if not py_spy.exists():
        return ["(install py-spy in .venv to see where a streamed replay spends its time)"]
    rec = chat_recording("profiled", 16)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "c.json").write_bytes(cassette.dumps(rec))
        p = start_proxy(tmp, "replay", confdir=confdir)
        out = Path(tmp) / "profile.txt"
        spy = subprocess.Popen(
            [
                str(py_spy),
                "record",
                "-p",
                str(p.process.pid),
                "-d",
                str(seconds),
                "-r",
                "200",
                "-f",
                "raw",
                "-o",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + seconds + 2
        with httpx.Client(proxy=p.url, timeout=30) as client:
            while time.monotonic() < deadline:
                post_all(client, json.dumps(rec.request.body.value).encode(), 100)
        spy.wait(30)
        p.stop()
        own, total = Counter(), 0
        for line in out.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            frames = stack.split(";")
            total += int(n)
            own[frames[-1].split(" (")[0]] += int(n)
            # the launcher runs mitmproxy itself: every sample is under it, none of it is ours
            if any("proxy_addon" in f and "mitm/launch.py" not in f for f in frames):
                own["(all of proxy_addon but the launcher, inclusive)"] += int(n)
    return [f"{100 * n / total:5.1f}%  {name}" for name, n in own.most_common(12)]


@click.command()
@click.option("--rounds", default=5, show_default=True, help="Runs per measurement (median).")
@click.option("--requests", default=1000, show_default=True, help="Requests per throughput run.")
@click.option(
    "--samples",
    default=300,
    show_default=True,
    help="Requests timed one by one for the latency at each directory size.",
)
@click.option(
    "--sizes",
    default="100,10000,100000",
    show_default=True,
    help="Directory sizes for the scale runs.",
)
@click.option("--quick", is_flag=True, help="Fewer rounds and requests, for a smoke run.")
@click.option(
    "--only",
    default="",
    help="Comma-separated steps to run (default all): replay, record, startup, indexing, "
    "lookup, run, paced, memory, profile.",
)
def main(rounds: int, requests: int, samples: int, sizes: str, quick: bool, only: str) -> None:
    """Benchmark the proxy against baselines in the same run; print a markdown table."""
    if quick:
        rounds, requests, samples = 2, 100, 100
    size_list = [int(s) for s in sizes.split(",")]
    confdir = Path(tempfile.mkdtemp(prefix="cassette-bench-ca-"))
    work = Path(tempfile.mkdtemp(prefix="cassette-bench-"))
    chosen = set(filter(None, only.split(",")))
    # an installed wheel has its bytecode; an editable install may not (PYTHONDONTWRITEBYTECODE),
    # and every proxy started would compile the package again (0.2 s of its start here)
    compileall.compile_dir(ROOT / "proxy_addon", quiet=1)
    load_before = os.getloadavg()
    try:
        rows: list[Row] = []
        templates = record_templates(confdir)
        scale_rounds = max(2, rounds // 2 + 1)
        steps: dict[str, Callable[[], list[Row]]] = {
            "replay": lambda: bench_replay(confdir, rounds, requests),
            "record": lambda: bench_record(confdir, 30),
            "startup": lambda: (
                bench_scale(confdir, size_list, scale_rounds, samples, work, templates)
                + corpus_rows(templates, size_list, work)
            ),
            "indexing": lambda: bench_indexing(size_list, work, scale_rounds),
            "lookup": lambda: bench_lookup(size_list, work, templates),
            "run": lambda: bench_run_overhead(work, rounds, BASELINE),
            "paced": lambda: bench_paced(confdir),
            "memory": lambda: [bench_memory_record(confdir)],
        }
        for label, step in steps.items():
            if chosen and label not in chosen:
                continue
            click.echo(f"{label}...", err=True, nl=False)
            started = time.perf_counter()
            rows += step()
            click.echo(f" {time.perf_counter() - started:.0f} s", err=True)
        profile = profile_streamed(confdir) if not chosen or "profile" in chosen else []
    finally:
        shutil.rmtree(confdir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    load = (
        ", ".join(f"{a:.1f}" for a in load_before)
        + " → "
        + ", ".join(f"{a:.1f}" for a in os.getloadavg())
    )
    click.echo(
        f"\n{date.today().isoformat()}, {os.cpu_count()} cores ({cpu}), "
        f"Python {platform.python_version()}, medians of {rounds} runs, "
        f"load average (1, 5, 15 min) {load}\n"
    )
    click.echo("| measure | ours | baseline | ratio |\n|---|---|---|---|")
    for row in rows:
        click.echo("| " + " | ".join(row) + " |")
    if profile:
        click.echo("\nA streamed replay (16 events), py-spy, share of samples by own frame:\n")
    for line in profile:
        click.echo(f"    {line}")


if __name__ == "__main__":
    main()
