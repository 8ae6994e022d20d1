"""scripts/bench: the proxy's costs, each measured against a baseline in the same run.

- replay throughput (plain and streamed) vs mitmproxy answering the same bytes from memory,
- record overhead (time to first event, total) vs talking to the upstream directly,
- start-up and per-request latency with 10 / 1,000 / 10,000 recordings,
- peak memory replaying 10,000 recordings and recording a 50 MB stream.

Medians of several runs; the baseline and our addon alternate so that machine noise hits both.
Prints a markdown table (with the date and the machine) to paste into the README.
"""

from __future__ import annotations

import base64
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import click
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from proxy_addon.formats import cassette  # noqa: E402
from proxy_addon.model import Body, RecordedRequest, RecordedResponse, Recording, Stream  # noqa: E402
from proxy_addon.sse import Event  # noqa: E402
from proxy_addon.wire import wire, wire_body, wire_headers  # noqa: E402
from proxy_addon.process import RunningProxy, start_proxy  # noqa: E402
from tests.upstream import FakeUpstreamServer, read_big_stream  # noqa: E402

URL = "http://api.openai.com/v1/chat/completions"
BASELINE = ROOT / "scripts" / "bench_baseline_addon.py"


def chat_recording(prompt: str, stream: bool, events: int = 15) -> Recording:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": prompt}], "stream": stream}
    chunk = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
             "model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": "word "},
                                             "finish_reason": None, "logprobs": None}]}
    if stream:
        evs = [Event(data=dict(chunk), t=0.01 * i) for i in range(events - 1)]
        evs.append(Event(data="[DONE]", t=0.01 * events))
        resp = RecordedResponse(200, [["content-type", "text/event-stream"]],
                                stream=Stream("sse", evs))
    else:
        resp = RecordedResponse(200, [["content-type", "application/json"]], body=Body("json", {
            "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000,
            "model": "gpt-4o", "choices": [{"index": 0, "finish_reason": "stop",
                                            "message": {"role": "assistant",
                                                        "content": "word " * 20}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 20, "total_tokens": 25}}))
    return Recording(RecordedRequest("POST", URL.replace("http:", "https:"),
                                     {"content-type": "application/json"}, Body("json", body)),
                     [resp])


def llama_stack_doc(prompt: str) -> dict[str, Any]:
    chunk = {"__type__": "openai.types.chat.chat_completion_chunk.ChatCompletionChunk",
             "__data__": {"id": "rec-bench", "object": "chat.completion.chunk", "created": 0,
                          "model": "gpt-4o", "choices": [{"index": 0, "finish_reason": None,
                                                          "delta": {"content": "word "}}]}}
    return {"test_id": f"tests/bench.py::test[{prompt}]",
            "request": {"method": "POST", "url": "https://api.openai.com/v1/v1/chat/completions",
                        "headers": {}, "endpoint": "/v1/chat/completions", "model": "gpt-4o",
                        "body": {"model": "gpt-4o", "stream": True,
                                 "messages": [{"role": "user", "content": prompt}]}},
            "response": {"body": [chunk] * 15, "is_streaming": True},
            "id_normalization_mapping": {}}


def generate(directory: Path, n: int) -> list[dict[str, Any]]:
    """n recordings, half ours (plain chat), half llama-stack (streamed chat); returns the
    request bodies to ask for them."""
    directory.mkdir(parents=True, exist_ok=True)
    bodies = []
    for i in range(n):
        if i % 2:
            doc = llama_stack_doc(f"llama prompt {i}")
            # indented, as llama-stack's recorder writes its files
            (directory / f"ls-{i:06d}.json").write_bytes(json.dumps(doc, indent=2).encode())
            bodies.append(doc["request"]["body"])
        else:
            rec = chat_recording(f"prompt {i}", stream=False)
            (directory / f"ours-{i:06d}.json").write_bytes(cassette.dumps(rec))
            bodies.append(rec.request.body.value)
    return bodies


def throughput(proxy: RunningProxy, body: dict[str, Any], requests: int) -> float:
    """Sequential keep-alive requests per second through the proxy."""
    payload = json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    with httpx.Client(proxy=proxy.url, timeout=30) as client:
        for _ in range(20):  # warm up: connection, caches
            client.post(URL, content=payload, headers=headers).read()
        start = time.perf_counter()
        for _ in range(requests):
            r = client.post(URL, content=payload, headers=headers)
            r.read()
            assert r.status_code == 200, r.text[:300]
        return requests / (time.perf_counter() - start)


def bench_replay(confdir: Path, rounds: int, requests: int) -> list[tuple[str, str, str, str]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for kind, stream in (("plain", False), ("streamed, 15 events", True)):
            rec = chat_recording(f"bench {kind}", stream)
            cassettes = d / kind.split(",")[0] / "cassettes"
            cassettes.mkdir(parents=True)
            (cassettes / "c.json").write_bytes(cassette.dumps(rec))
            resp = rec.responses[0]
            table = d / f"{kind.split(',')[0]}.json"
            table.write_text(json.dumps({"/v1/chat/completions": {
                "status": resp.status,
                "headers": [[k.decode(), v.decode()] for k, v in wire_headers(resp)],
                "body": base64.b64encode(wire_body(resp)).decode()}}))
            ours, base = [], []
            for _ in range(rounds):
                p = start_proxy(d, script=BASELINE, confdir=confdir,
                                options={"bench_responses": str(table)})
                base.append(throughput(p, rec.request.body.value, requests))
                p.stop()
                p = start_proxy(cassettes, "replay", confdir=confdir)
                ours.append(throughput(p, rec.request.body.value, requests))
                p.stop()
            mo, mb = statistics.median(ours), statistics.median(base)
            rows.append((f"replay throughput, {kind}", f"{mo:.0f} req/s",
                         f"{mb:.0f} req/s (mitmproxy, fixed bytes)", f"{mo / mb:.2f}x"))
    return rows


def stream_timing(client: httpx.Client, url: str, prompt: str) -> tuple[float, float]:
    start = time.perf_counter()
    first = None
    with client.stream("POST", url, json={"model": "gpt-4o", "stream": True,
                                          "messages": [{"role": "user", "content": prompt}]}) as r:
        for _ in r.iter_bytes():
            if first is None:
                first = time.perf_counter() - start
    return first or 0.0, time.perf_counter() - start


def bench_record(confdir: Path, runs: int) -> list[tuple[str, str, str, str]]:
    """A stream from a local upstream: direct, through bare mitmproxy (which buffers it), and
    through our recording proxy (which streams it and writes the cassette)."""
    upstream = FakeUpstreamServer().start()
    upstream.state.event_delay = 0.005
    url = upstream.base_url + "/v1/chat/completions"
    timings: dict[str, list[tuple[float, float]]] = {"direct": [], "bare": [], "record": []}
    with tempfile.TemporaryDirectory() as tmp:
        bare = start_proxy(Path(tmp), script=BASELINE, confdir=confdir)
        rec = start_proxy(Path(tmp) / "c", "record", confdir=confdir)
        with httpx.Client(timeout=30) as direct, \
                httpx.Client(proxy=bare.url, timeout=30) as via_bare, \
                httpx.Client(proxy=rec.url, timeout=30) as via_rec:
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
    return [("record: time to first event", f"{first['record']:.1f} ms",
             f"{first['direct']:.1f} ms (direct)", f"+{first['record'] - first['direct']:.1f} ms"),
            ("record: whole stream (12 events, 5 ms apart)", f"{total['record']:.1f} ms",
             f"{total['direct']:.1f} ms (direct)", f"{total['record'] / total['direct']:.2f}x"),
            ("same stream through bare mitmproxy (buffers it)", f"{total['bare']:.1f} ms",
             f"{total['direct']:.1f} ms (direct)", f"{total['bare'] / total['direct']:.2f}x")]


def bench_scale(confdir: Path, sizes: list[int], rounds: int, requests: int,
                ) -> tuple[list[tuple[str, str, str, str]], float | None]:
    rows = []
    rss_10k = None
    empty_starts = []
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty"
        empty.mkdir()
        for _ in range(rounds):
            t = time.perf_counter()
            p = start_proxy(empty, "replay", confdir=confdir)
            empty_starts.append(time.perf_counter() - t)
            p.stop()
        base_start = statistics.median(empty_starts)
        rows.append(("start-up, empty directory", f"{base_start:.2f} s", "", ""))
        latencies: dict[int, float] = {}
        for n in sizes:
            d = Path(tmp) / f"n{n}"
            bodies = generate(d, n)
            starts, lat = [], []
            for _ in range(rounds):
                t = time.perf_counter()
                p = start_proxy(d, "replay", confdir=confdir)
                starts.append(time.perf_counter() - t)
                sample = random.Random(n).choices(bodies, k=requests)
                with httpx.Client(proxy=p.url, timeout=30) as client:
                    # a first pass frames each sampled answer once (cached afterwards); the
                    # timed pass then measures lookup and answer, the same work at any size
                    for body in sample:
                        client.post(URL, json=body).read()
                    times = []
                    for body in sample:
                        s = time.perf_counter()
                        r = client.post(URL, json=body)
                        r.read()
                        times.append(time.perf_counter() - s)
                        assert r.status_code == 200, r.text[:300]
                lat.append(statistics.median(times))
                if n == max(sizes):
                    rss_10k = p.peak_rss_mb()
                p.stop()
            latencies[n] = statistics.median(lat) * 1000
            rows.append((f"start-up, {n:,} recordings", f"{statistics.median(starts):.2f} s",
                         f"{base_start:.2f} s (empty)",
                         f"+{statistics.median(starts) - base_start:.2f} s"))
        small = latencies[min(sizes)]
        for n in sizes:
            rows.append((f"replay latency per request, {n:,} recordings",
                         f"{latencies[n]:.2f} ms", f"{small:.2f} ms ({min(sizes)} recordings)",
                         f"{latencies[n] / small:.2f}x"))
    return rows, rss_10k


def bench_lookup(sizes: list[int], requests: int = 2000) -> list[tuple[str, str, str, str]]:
    """Our own work per replayed request, in this process: canonicalise, look up, answer."""
    import gc

    from proxy_addon import matching
    from proxy_addon.store import CassetteStore

    costs: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            d = Path(tmp) / f"n{n}"
            bodies = generate(d, n)
            store = CassetteStore(d)
            gc.disable()
            store.load()
            gc.enable()
            gc.freeze()
            raws = [json.dumps(b).encode() for b in random.Random(n).choices(bodies, k=requests)]

            def serve() -> None:
                for raw in raws:
                    hit = store.lookup(matching.canonicalize("POST", URL, "application/json", raw))
                    wire(hit.response)

            serve()  # frame each answer once
            runs = []
            for _ in range(5):
                start = time.perf_counter()
                serve()
                runs.append((time.perf_counter() - start) / len(raws) * 1e6)
            costs[n] = statistics.median(runs)
            gc.unfreeze()
    small = costs[min(sizes)]
    return [(f"our work per request (canonicalise, look up, answer), {n:,} recordings",
             f"{costs[n]:.1f} µs", f"{small:.1f} µs ({min(sizes)} recordings)",
             f"{costs[n] / small:.2f}x") for n in sizes]


def bench_memory_record(confdir: Path) -> tuple[float, float, int]:
    upstream = FakeUpstreamServer().start()
    with tempfile.TemporaryDirectory() as tmp:
        p = start_proxy(Path(tmp) / "c", "record", confdir=confdir)
        before = p.peak_rss_mb()
        size = read_big_stream(p.url, upstream.base_url)
        time.sleep(0.5)
        after = p.peak_rss_mb()
        p.stop()
    upstream.stop()
    return before, after, size


@click.command()
@click.option("--rounds", default=5, show_default=True, help="Runs per measurement (median).")
@click.option("--requests", default=300, show_default=True, help="Requests per throughput run.")
@click.option("--sizes", default="10,1000,10000", show_default=True,
              help="Directory sizes for the scale runs.")
@click.option("--quick", is_flag=True, help="Fewer rounds and requests, for a smoke run.")
def main(rounds: int, requests: int, sizes: str, quick: bool) -> None:
    """Benchmark the proxy against baselines in the same run; print a markdown table."""
    if quick:
        rounds, requests = 2, 100
    size_list = [int(s) for s in sizes.split(",")]
    confdir = Path(tempfile.mkdtemp(prefix="cassette-bench-ca-"))
    try:
        rows: list[tuple[str, str, str, str]] = []
        click.echo("replay throughput...", err=True)
        rows += bench_replay(confdir, rounds, requests)
        click.echo("record overhead...", err=True)
        rows += bench_record(confdir, max(10, requests // 10))
        click.echo("scale...", err=True)
        scale_rows, rss_10k = bench_scale(confdir, size_list, max(2, rounds // 2), requests)
        rows += scale_rows
        rows += bench_lookup(size_list)
        click.echo("memory...", err=True)
        before, after, size = bench_memory_record(confdir)
        if rss_10k is not None:
            rows.append((f"peak RSS replaying {max(size_list):,} recordings", f"{rss_10k:.0f} MB",
                         "", ""))
        rows.append((f"peak RSS recording one {size / 1048576:.0f} MB stream", f"{after:.0f} MB",
                     f"{before:.0f} MB (idle proxy)", f"+{after - before:.0f} MB"))
    finally:
        shutil.rmtree(confdir, ignore_errors=True)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), platform.processor())
    click.echo(f"\n{date.today().isoformat()}, {os.cpu_count()} cores ({cpu}), "
               f"Python {platform.python_version()}, medians of {rounds} runs\n")
    click.echo("| measure | ours | baseline | ratio |\n|---|---|---|---|")
    for row in rows:
        click.echo("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
