"""Reading cassettes the way they are reviewed: ``ls``, ``show``, ``text``, and how old they are
(``ls --older-than``, ``stale``)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console

from proxy_addon import formats
from proxy_addon.bodies.reassemble import reassemble
from proxy_addon.cli.common import (
    console,
    entries,
    json_option,
    load_store,
    print_json,
    printable,
    resolve,
    table,
)
from proxy_addon.cli.options import dir_option
from proxy_addon.matching import canonical
from proxy_addon.model import (
    Body,
    CassetteError,
    RecordedResponse,
    Recording,
    WebSocketConversation,
)
from proxy_addon.store import CassetteStore, age
from proxy_addon.store.entries import Entry
from proxy_addon.store.layout import model_of, origin_of


def _endpoint(rec: Recording) -> str:
    canon = canonical.canonicalize(canonical.Request.recorded(rec.request))
    return f"{canon.host or '*'}{canon.path}"


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB"):
        if size < 1024 or unit == "MB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)


def _row(entry: Entry, root: Path) -> dict[str, Any]:
    rec = entry.recording
    streams = [r.stream for r in rec.responses if r.stream is not None]
    sockets = [r.websocket for r in rec.responses if r.websocket is not None]
    recorded = age.recorded(rec)
    return {
        "file": str(
            entry.path.relative_to(root) if entry.path.is_relative_to(root) else entry.path
        ),
        "key": entry.key,
        "method": rec.request.method,
        "endpoint": _endpoint(rec),
        "model": model_of(rec.request) or "",
        "stream": f"{streams[0].format}, {len(streams[0].events)} events"
        if streams
        else f"ws, {len(sockets[0].messages)} messages"
        if sockets
        else None,
        "responses": len(rec.responses),
        "status": [r.status for r in rec.responses],
        "size": entry.path.stat().st_size,
        "recorded": recorded.date().isoformat() if recorded else None,
        "source": rec.source,
        "test_id": rec.test_id,
    }


def _age_option(value: str | None) -> timedelta | None:
    try:
        return age.parse_age(value) if value is not None else None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--older-than") from None


@click.command("ls")
@dir_option
@click.option("--grep", "pattern", help="Only rows whose text contains PATTERN (case-insensitive).")
@click.option(
    "--older-than",
    "older_than",
    metavar="AGE",
    callback=lambda ctx, param, value: _age_option(value),
    help="Only recordings older than AGE (30d, 12h, 2w), by their newest response's "
    "recorded_at; recordings without one (llama-stack's) are never listed.",
)
@json_option
def ls_command(
    cassette_dir: Path, pattern: str | None, older_than: timedelta | None, as_json: bool
) -> None:
    """List recordings: method, endpoint, model, stream, status, size, date.

    \b
    Example: cassette ls --dir cassettes --grep chat/completions
             cassette ls --older-than 30d
    """
    store = load_store(cassette_dir)
    found = entries(store)
    if older_than is not None:
        limit = age.now() - older_than
        found = [e for e in found if (when := age.recorded(e.recording)) and when < limit]
    rows = [printable(_row(e, cassette_dir)) for e in found]  # JSON holds no surrogates
    if pattern:
        needle = pattern.lower()
        rows = [r for r in rows if needle in orjson.dumps(r).decode().lower()]
    if as_json:
        print_json(rows)
        return
    out = console()
    listing = table(
        out, "method", "endpoint", "model", "stream", "status", "size", "recorded", "file"
    )
    for r in rows:
        listing.add_row(
            r["method"],
            r["endpoint"],
            r["model"] or "-",
            r["stream"] or "-",
            ",".join(map(str, r["status"])),
            _size(r["size"]),
            r["recorded"] or "-",
            r["file"],
        )
    out.print(listing)
    out.print(_count_line(len(rows), store))


def _show_response(console: Console, i: int, total: int, resp: RecordedResponse) -> None:
    console.rule(
        f"response {i + 1} of {total}: {resp.status}"
        + (f"  recorded {resp.recorded_at}" if resp.recorded_at else "")
    )
    for name, value in resp.headers:
        console.print(f"[cyan]{name}[/cyan]: {value}", highlight=False, markup=True)
    if resp.stream is not None:
        s = resp.stream
        console.print(
            f"[bold]{s.format} stream[/bold], {len(s.events)} events"
            + ("" if s.complete else f" [red](incomplete: {s.cut or 'cut off'})[/red]")
        )
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
        payload = (
            orjson.dumps(body.value).decode()
            if body.kind == "json"
            else body.value
            if body.kind == "text"
            else f"<{len(body.to_bytes())} bytes, binary>"
        )
        console.print(
            f"#{n:<3} +{m.t:7.3f}s {arrow} ", end="", style="dim", markup=False, highlight=False
        )
        console.print(payload, markup=False, highlight=console.is_terminal, soft_wrap=True)
    close = conversation.close
    if close is not None:
        console.print(
            f"close +{close.t:.3f}s by the {close.side}: {close.code}"
            + (f" {close.reason}" if close.reason else ""),
            markup=False,
            highlight=False,
        )


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
        try:
            stored = formats.read_bytes(path)
        except CassetteError as e:
            raise click.ClickException(str(e)) from None
        click.echo(stored.decode("utf-8", "replace"), nl=False)
        return
    out = console()
    out.rule(f"{path}")
    if rec.test_id:
        out.print(f"test: {rec.test_id}", markup=False)
    out.print(f"[bold]{rec.request.method} {rec.request.url}[/bold]", highlight=False)
    if rec.request.any_host:
        out.print(
            f"answers this request on any host; requests to {origin_of(rec.request)} "
            "prefer it, others only when no recording of their own host or provider "
            "exists (then counted as answered from another host's recording)",
            markup=False,
            highlight=False,
        )
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


def _age_rows(found: list[tuple[str, datetime | None]], now: datetime) -> list[dict[str, Any]]:
    """Per directory (and ``(all)``): how many recordings, the oldest and newest date, how
    many are older than each of ``age.THRESHOLDS``, how many have no date."""
    groups: dict[str, list[datetime | None]] = defaultdict(list)
    for directory, when in found:
        groups[directory].append(when)
    groups["(all)"] = [when for _, when in found]
    limits = {name: now - age.parse_age(name) for name in age.THRESHOLDS}
    rows = []
    for directory, whens in sorted(groups.items(), key=lambda g: (g[0] == "(all)", g[0])):
        dated = [w for w in whens if w is not None]
        rows.append(
            {
                "dir": directory,
                "recordings": len(whens),
                "oldest": min(dated).date().isoformat() if dated else None,
                "newest": max(dated).date().isoformat() if dated else None,
                "older_than": {
                    name: sum(1 for w in dated if w < limit) for name, limit in limits.items()
                },
                "undated": len(whens) - len(dated),
            }
        )
    return rows


@click.command("stale")
@dir_option
@json_option
def stale_command(cassette_dir: Path, as_json: bool) -> None:
    """How old the recordings are, per directory: how many, the oldest and newest, how many
    are older than 7, 30, 90 and 365 days, and how many have no date (llama-stack's: never
    stale). A recording's date is its newest response's recorded_at.

    \b
    Example: cassette stale --dir cassettes
    """
    store = load_store(cassette_dir)
    found = []
    for e in entries(store):
        rel = (
            e.path.parent.relative_to(cassette_dir)
            if e.path.is_relative_to(cassette_dir)
            else e.path.parent
        )
        found.append((rel.as_posix(), age.recorded(e.recording)))
    rows = _age_rows(found, age.now())
    if as_json:
        print_json(rows)
        return
    out = console()
    listing = table(
        out,
        "directory",
        "recordings",
        "oldest",
        "newest",
        *(f">{name}" for name in age.THRESHOLDS),
        "undated",
    )
    for r in rows:
        listing.add_row(
            r["dir"],
            str(r["recordings"]),
            r["oldest"] or "-",
            r["newest"] or "-",
            *(str(r["older_than"][name]) for name in age.THRESHOLDS),
            str(r["undated"]),
        )
    out.print(listing)
    out.print(_count_line(len(found), store))


def _count_line(shown: int, store: CassetteStore) -> str:
    """How many recordings a listing shows, and how many files it could not read."""
    bad = store.index.bad
    return f"{shown} recordings" + (
        f", {len(bad)} unreadable files (run cassette verify)" if bad else ""
    )
