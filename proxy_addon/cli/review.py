"""Reading cassettes the way they are reviewed: ``ls``, ``show``, ``text``, ``diff``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console

from proxy_addon import matching
from proxy_addon.cli.common import (
    console,
    dir_option,
    entries,
    json_option,
    load_store,
    print_json,
    resolve,
    table,
)
from proxy_addon.formats import cassette
from proxy_addon.model import Body, RecordedResponse, Recording, WebSocketConversation
from proxy_addon.reassemble import reassemble
from proxy_addon.store.index import Entry
from proxy_addon.store.layout import model_of, origin_of


def _endpoint(rec: Recording) -> str:
    canon = matching.canonical_recorded(rec.request)
    return f"{canon.host or '*'}{canon.path}"


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB"):
        if n < 1024 or unit == "MB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _row(entry: Entry, root: Path) -> dict[str, Any]:
    rec = entry.recording
    streams = [r.stream for r in rec.responses if r.stream is not None]
    sockets = [r.websocket for r in rec.responses if r.websocket is not None]
    recorded = next((r.recorded_at for r in rec.responses if r.recorded_at), None)
    return {
        "file": str(entry.path.relative_to(root)) if entry.path.is_relative_to(root) else str(entry.path),
        "key": entry.key,
        "method": rec.request.method,
        "endpoint": _endpoint(rec),
        "model": model_of(rec.request) or "",
        "stream": f"{streams[0].format}, {len(streams[0].events)} events" if streams else
        f"ws, {len(sockets[0].messages)} messages" if sockets else None,
        "responses": len(rec.responses),
        "status": [r.status for r in rec.responses],
        "size": entry.path.stat().st_size,
        "recorded": recorded[:10] if recorded else None,
        "source": rec.source,
        "test_id": rec.test_id,
    }



@click.command("ls")
@dir_option
@click.option("--grep", "pattern", help="Only rows whose text contains PATTERN (case-insensitive).")
@json_option
def ls_command(cassette_dir: Path, pattern: str | None, as_json: bool) -> None:
    """List recordings: method, endpoint, model, stream, status, size, date.

    \b
    Example: cassette ls --dir cassettes --grep chat/completions
    """
    store = load_store(cassette_dir)
    rows = [_row(e, cassette_dir) for e in entries(store)]
    if pattern:
        needle = pattern.lower()
        rows = [r for r in rows if needle in orjson.dumps(r).decode().lower()]
    if as_json:
        print_json(rows)
        return
    out = console()
    listing = table(out, "method", "endpoint", "model", "stream", "status", "size", "recorded",
                    "file")
    for r in rows:
        listing.add_row(r["method"], r["endpoint"], r["model"] or "-", r["stream"] or "-",
                        ",".join(map(str, r["status"])), _size(r["size"]), r["recorded"] or "-",
                        r["file"])
    out.print(listing)
    bad = store.index.bad
    out.print(f"{len(rows)} recordings" + (f", {len(bad)} unreadable files "
                                           "(run cassette verify)" if bad else ""))


def _show_response(console: Console, i: int, total: int, resp: RecordedResponse) -> None:
    console.rule(f"response {i + 1} of {total}: {resp.status}"
                 + (f"  recorded {resp.recorded_at}" if resp.recorded_at else ""))
    for name, value in resp.headers:
        console.print(f"[cyan]{name}[/cyan]: {value}", highlight=False, markup=True)
    if resp.stream is not None:
        s = resp.stream
        console.print(f"[bold]{s.format} stream[/bold], {len(s.events)} events"
                      + ("" if s.complete else
                         f" [red](incomplete: {s.cut or 'cut off'})[/red]"))
        for n, ev in enumerate(s.events):
            label = f"#{n:<3} +{ev.t:7.3f}s"
            if ev.event:
                label += f" {ev.event}"
            if ev.data is None:
                payload = ": " + " ".join(ev.comments)
            else:
                payload = ev.data if isinstance(ev.data, str) else orjson.dumps(ev.data).decode()
            console.print(f"{label} ", end="", style="dim", markup=False, highlight=False)
            console.print(payload, markup=False, highlight=console.is_terminal, soft_wrap=True)
    elif resp.websocket is not None:
        _show_websocket(console, resp.websocket)
    elif resp.body is not None:
        _show_body(console, resp.body)


def _show_websocket(console: Console, conversation: WebSocketConversation) -> None:
    """Each message with its time after the handshake and its direction, then the close."""
    console.print(f"[bold]websocket[/bold], {len(conversation.messages)} messages")
    for n, m in enumerate(conversation.messages):
        arrow = "client ->" if m.side == "client" else "server <-"
        body = m.payload
        payload = orjson.dumps(body.value).decode() if body.kind == "json" else \
            body.value if body.kind == "text" else f"<{len(body.to_bytes())} bytes, binary>"
        console.print(f"#{n:<3} +{m.t:7.3f}s {arrow} ", end="", style="dim", markup=False,
                      highlight=False)
        console.print(payload, markup=False, highlight=console.is_terminal, soft_wrap=True)
    close = conversation.close
    if close is not None:
        console.print(f"close +{close.t:.3f}s by the {close.side}: {close.code}"
                      + (f" {close.reason}" if close.reason else ""), markup=False,
                      highlight=False)


def _show_body(console: Console, body: Body) -> None:
    if body.kind == "json":
        console.print_json(orjson.dumps(body.value).decode(), highlight=console.is_terminal)
    elif body.kind == "text":
        console.print(body.value, markup=False, highlight=False)
    else:
        console.print(f"<{len(body.to_bytes())} bytes, base64>", markup=False)


@click.command("show")
@click.argument("ref", metavar="CASSETTE")
@dir_option
@click.option("--raw", is_flag=True, help="Print the file exactly as stored.")
def show_command(ref: str, cassette_dir: Path, raw: bool) -> None:
    """Show a recording's request and responses; streams event by event, WebSockets message
    by message.

    \b
    Example: cassette show 3f2a9c   (a key prefix) or cassette show path/to/file.json
    """
    path, rec = resolve(ref, cassette_dir)
    if raw:
        click.echo(path.read_bytes().decode("utf-8", "replace"), nl=False)
        return
    out = console()
    out.rule(f"{path}")
    if rec.test_id:
        out.print(f"test: {rec.test_id}", markup=False)
    out.print(f"[bold]{rec.request.method} {rec.request.url}[/bold]", highlight=False)
    if rec.request.any_host:
        out.print(f"answers this request on any host; requests to {origin_of(rec.request)} "
                      "prefer it, others only when no recording of their own host or provider "
                      "exists (then counted as answered from another host's recording)",
                      markup=False, highlight=False)
    for name, value in rec.request.headers.items():
        out.print(f"[cyan]{name}[/cyan]: {value}", highlight=False)
    if rec.request.body is not None:
        _show_body(out, rec.request.body)
    for i, resp in enumerate(rec.responses):
        _show_response(out, i, len(rec.responses), resp)


@click.command("text")
@click.argument("ref", metavar="CASSETTE")
@dir_option
def text_command(ref: str, cassette_dir: Path) -> None:
    """Print what the user saw: assistant text, tool calls and usage, reassembled.

    \b
    Example: cassette text cassettes/api.openai.com/v1/chat/completions/gpt-4o-3f2a9c1d7e4b.json
    """
    _, rec = resolve(ref, cassette_dir)
    for i, resp in enumerate(rec.responses):
        if len(rec.responses) > 1:
            click.echo(f"--- response {i + 1} of {len(rec.responses)} ({resp.status}) ---")
        click.echo(reassemble(resp).render())



def _body_value(body: Body | None) -> Any:
    return None if body is None else body.value


def _response_value(resp: RecordedResponse) -> Any:
    if resp.websocket is not None:  # as in the file, without the times
        section = cassette.websocket_to_dict(resp.websocket)
        return {"websocket": {"messages": [{k: v for k, v in m.items() if k != "t"}
                                           for m in section["messages"]],
                              "close": {k: v for k, v in section.get("close", {}).items()
                                        if k != "t"}}}
    if resp.stream is not None:
        return {"stream": [e.data for e in resp.stream.events], "complete": resp.stream.complete}
    return {"body": _body_value(resp.body)}


@click.command("diff")
@click.argument("a", metavar="A")
@click.argument("b", metavar="B")
@dir_option
@json_option
def diff_command(a: str, b: str, cassette_dir: Path, as_json: bool) -> None:
    """Show where two recordings differ: request and response JSON paths. Exits 1 when they
    differ, 0 when they are the same, like diff.

    \b
    Example: cassette diff 3f2a9c 8b01de
    """
    (pa, ra), (pb, rb) = resolve(a, cassette_dir), resolve(b, cassette_dir)
    req = matching.request_diff(matching.canonical_recorded(ra.request),
                                matching.canonical_recorded(rb.request))
    resp: list[str] = []
    if len(ra.responses) != len(rb.responses):
        resp.append(f"responses: {len(ra.responses)} vs {len(rb.responses)}")
    for i, (x, y) in enumerate(zip(ra.responses, rb.responses)):
        if x.status != y.status:
            resp.append(f"responses[{i}].status: {x.status} vs {y.status}")
        resp += [f"responses[{i}].{p}" for p in
                 matching.diff_paths(_response_value(x), _response_value(y), limit=50)]
    if as_json:
        print_json({"a": str(pa), "b": str(pb), "request": req, "responses": resp})
    else:
        click.echo(f"A: {pa}\nB: {pb}")
        click.echo("request: " + ("same" if not req else "differs at " + ", ".join(req)))
        click.echo("responses: " + ("same" if not resp else "differ at:"))
        for line in resp:
            click.echo(f"  {line}")
    if req or resp:
        sys.exit(1)
