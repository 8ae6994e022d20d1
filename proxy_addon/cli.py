"""The ``cassette`` command: read cassettes the way they are reviewed, and run things through
the proxy in CI. Exit codes: 0 ok, 1 a check failed, 2 usage error."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, NoReturn

import click
import orjson
from rich.console import Console
from rich.table import Table

from proxy_addon import cassette, llama_stack, matching, redact
from proxy_addon.cassette import CassetteError, RecordedResponse, Recording
from proxy_addon.process import ADDON_SCRIPT, ProxyStartError, mitmdump_executable, start_proxy
from proxy_addon.reassemble import reassemble
from proxy_addon.store import (
    CassetteStore,
    Entry,
    atomic_write,
    iter_cassette_files,
    layout_path,
    model_of,
    origin_of,
)

MODES = ("replay", "record", "auto", "passthrough")

dir_option = click.option(
    "--dir", "cassette_dir", type=click.Path(path_type=Path, file_okay=False), default="cassettes",
    envvar="CASSETTE_DIR", show_default=True, show_envvar=True, help="Cassette directory.")
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")


def _console() -> Console:
    """Colour and boxes on a terminal; plain, wide, uncoloured text in a pipe or a CI log."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 200), no_color=True, highlight=False)
    return console


def _table(console: Console, *columns: str) -> Table:
    if console.is_terminal:
        table = Table(*columns, header_style="bold")
    else:
        table = Table(*columns, box=None, pad_edge=False, show_edge=False, header_style="")
    for col in table.columns:
        col.overflow = "ellipsis"
        col.no_wrap = True
    return table


def _print_json(value: Any) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def _load_store(cassette_dir: Path) -> CassetteStore:
    if not cassette_dir.is_dir():
        raise click.UsageError(f"no cassette directory at {cassette_dir} (use --dir or "
                               "CASSETTE_DIR)")
    store = CassetteStore(cassette_dir)
    store.load()
    return store


def _entries(store: CassetteStore) -> list[Entry]:
    return sorted(store.all_entries(), key=lambda e: str(e.path))


def _resolve(ref: str, cassette_dir: Path) -> tuple[Path, Recording]:
    """A cassette by file path, or by a unique prefix of its key or of its file name."""
    path = Path(ref)
    if path.is_file():
        try:
            return path, cassette.load(path)
        except CassetteError as e:
            raise click.ClickException(str(e)) from None
    store = _load_store(cassette_dir)
    found = [e for e in _entries(store)
             if e.canonical.key().startswith(ref) or e.path.stem.startswith(ref)
             or e.path.stem.rsplit("-", 1)[-1].startswith(ref)]
    if not found:
        raise click.BadParameter(f"no cassette file or key prefix {ref!r} in {cassette_dir}",
                                 param_hint="CASSETTE")
    if len({e.path for e in found}) > 1:
        names = "\n  ".join(str(e.path) for e in found[:10])
        raise click.BadParameter(f"{ref!r} is ambiguous, it matches:\n  {names}",
                                 param_hint="CASSETTE")
    return found[0].path, found[0].recording


def _endpoint(rec: Recording) -> str:
    canon = rec.request.canonical()
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
    recorded = next((r.recorded_at for r in rec.responses if r.recorded_at), None)
    return {
        "file": str(entry.path.relative_to(root)) if entry.path.is_relative_to(root) else str(entry.path),
        "key": entry.canonical.key(),
        "method": rec.request.method,
        "endpoint": _endpoint(rec),
        "model": model_of(rec.request) or "",
        "stream": f"{streams[0].format}, {len(streams[0].events)} events" if streams else None,
        "responses": len(rec.responses),
        "status": [r.status for r in rec.responses],
        "size": entry.path.stat().st_size,
        "recorded": recorded[:10] if recorded else None,
        "source": rec.source,
        "test_id": rec.test_id,
    }


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Inspect LLM API cassettes and run commands through the recording proxy.

    \b
    Example:
      cassette ls --grep gpt-4o
      cassette run --mode replay -- pytest -q
    """


@main.command("ls")
@dir_option
@click.option("--grep", "pattern", help="Only rows whose text contains PATTERN (case-insensitive).")
@json_option
def ls_command(cassette_dir: Path, pattern: str | None, as_json: bool) -> None:
    """List recordings: method, endpoint, model, stream, status, size, date.

    \b
    Example: cassette ls --dir cassettes --grep chat/completions
    """
    store = _load_store(cassette_dir)
    rows = [_row(e, cassette_dir) for e in _entries(store)]
    if pattern:
        needle = pattern.lower()
        rows = [r for r in rows if needle in orjson.dumps(r).decode().lower()]
    if as_json:
        _print_json(rows)
        return
    console = _console()
    table = _table(console, "method", "endpoint", "model", "stream", "status", "size",
                   "recorded", "file")
    for r in rows:
        table.add_row(r["method"], r["endpoint"], r["model"] or "-", r["stream"] or "-",
                      ",".join(map(str, r["status"])), _size(r["size"]), r["recorded"] or "-",
                      r["file"])
    console.print(table)
    console.print(f"{len(rows)} recordings" + (f", {len(store.bad)} unreadable files "
                                               "(run cassette verify)" if store.bad else ""))


def _show_response(console: Console, i: int, total: int, resp: RecordedResponse) -> None:
    console.rule(f"response {i + 1} of {total}: {resp.status}"
                 + (f"  recorded {resp.recorded_at}" if resp.recorded_at else ""))
    for name, value in resp.headers:
        console.print(f"[cyan]{name}[/cyan]: {value}", highlight=False, markup=True)
    if resp.stream is not None:
        s = resp.stream
        console.print(f"[bold]{s.format} stream[/bold], {len(s.events)} events"
                      + ("" if s.complete else " [red](incomplete: cut off)[/red]"))
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
    elif resp.body is not None:
        _show_body(console, resp.body)


def _show_body(console: Console, body: cassette.Body) -> None:
    if body.kind == "json":
        console.print_json(orjson.dumps(body.value).decode(), highlight=console.is_terminal)
    elif body.kind == "text":
        console.print(body.value, markup=False, highlight=False)
    else:
        console.print(f"<{len(body.to_bytes())} bytes, base64>", markup=False)


@main.command("show")
@click.argument("ref", metavar="CASSETTE")
@dir_option
@click.option("--raw", is_flag=True, help="Print the file exactly as stored.")
def show_command(ref: str, cassette_dir: Path, raw: bool) -> None:
    """Show a recording's request and responses; streams event by event.

    \b
    Example: cassette show 3f2a9c   (a key prefix) or cassette show path/to/file.json
    """
    path, rec = _resolve(ref, cassette_dir)
    if raw:
        click.echo(path.read_bytes().decode("utf-8", "replace"), nl=False)
        return
    console = _console()
    console.rule(f"{path}")
    if rec.test_id:
        console.print(f"test: {rec.test_id}", markup=False)
    console.print(f"[bold]{rec.request.method} {rec.request.url}[/bold]", highlight=False)
    if rec.request.any_host:
        console.print(f"answers this request on any host; requests to {origin_of(rec.request)} "
                      "prefer it, others only when no recording of their own host or provider "
                      "exists (then counted as answered from another host's recording)",
                      markup=False, highlight=False)
    for name, value in rec.request.headers.items():
        console.print(f"[cyan]{name}[/cyan]: {value}", highlight=False)
    if rec.request.body is not None:
        _show_body(console, rec.request.body)
    for i, resp in enumerate(rec.responses):
        _show_response(console, i, len(rec.responses), resp)


@main.command("text")
@click.argument("ref", metavar="CASSETTE")
@dir_option
def text_command(ref: str, cassette_dir: Path) -> None:
    """Print what the user saw: assistant text, tool calls and usage, reassembled.

    \b
    Example: cassette text cassettes/api.openai.com/v1/chat/completions/gpt-4o-3f2a9c1d7e4b.json
    """
    _, rec = _resolve(ref, cassette_dir)
    for i, resp in enumerate(rec.responses):
        if len(rec.responses) > 1:
            click.echo(f"--- response {i + 1} of {len(rec.responses)} ({resp.status}) ---")
        click.echo(reassemble(resp).render())


# -- verify ----------------------------------------------------------------------------------

_SECRET_PATTERNS = [
    ("a bearer token", re.compile(rb"[Bb]earer\s+(?!<redacted>)[A-Za-z0-9._~+/=-]{8,}")),
    ("an sk-... API key", re.compile(rb"\bsk-(?:[A-Za-z0-9]+-)*[A-Za-z0-9_]{16,}")),
    ("a Google API key", re.compile(rb"\bAIza[0-9A-Za-z_-]{35}\b")),
]


def _env_secrets() -> list[tuple[str, bytes]]:
    return [(name, value.encode()) for name, value in os.environ.items()
            if re.fullmatch(r".*_API_KEY|.*_API_TOKEN", name) and len(value) >= 8]


def secret_findings(raw: bytes, rec: Recording | None) -> list[str]:
    """Why a file leaks a secret, if it does: patterns, live env keys, unredacted fields."""
    found = [f"contains {what}" for what, rx in _SECRET_PATTERNS if rx.search(raw)]
    found += [f"contains the value of ${name}" for name, value in _env_secrets() if value in raw]
    if rec is not None:
        for name, value in rec.request.headers.items():
            if name in redact.SECRET_HEADERS and value != redact.REDACTED:
                found.append(f"request header {name} is not redacted")
        for resp in rec.responses:
            for name, value in resp.headers:
                if name.lower() in redact.SECRET_HEADERS and value != redact.REDACTED:
                    found.append(f"response header {name} is not redacted")
        if redact.redact_url(rec.request.url) != rec.request.url:
            found.append("request URL has a secret query parameter or credentials")
        body = rec.request.body
        if body is not None and body.kind == "json" and redact.redact_body(body.value) != body.value:
            found.append("request body has an unredacted secret field")
    return found


@main.command("verify")
@dir_option
def verify_command(cassette_dir: Path) -> None:
    """Check every file parses, fits the format, and holds no secret; exit 1 if not.

    \b
    Example (CI or pre-commit): cassette verify --dir cassettes
    """
    if not cassette_dir.is_dir():
        raise click.UsageError(f"no cassette directory at {cassette_dir}")
    bad = 0
    total = 0
    for path in iter_cassette_files(cassette_dir):
        total += 1
        raw = b""
        rec = None
        problems: list[str] = []
        try:
            raw = path.read_bytes()
            rec = cassette.loads(raw, path)
        except OSError as e:
            problems.append(f"cannot read ({e.strerror})")
        except CassetteError as e:
            problems.append(e.reason)
        problems += secret_findings(raw, rec)
        if problems:
            bad += 1
            for p in problems:
                click.echo(f"{path}: {p}")
    click.echo(f"{total} files checked, {bad} bad", err=bad > 0)
    if bad:
        sys.exit(1)


# -- diff ------------------------------------------------------------------------------------


def _body_value(body: cassette.Body | None) -> Any:
    return None if body is None else body.value


def _response_value(resp: RecordedResponse) -> Any:
    if resp.stream is not None:
        return {"stream": [e.data for e in resp.stream.events], "complete": resp.stream.complete}
    return {"body": _body_value(resp.body)}


@main.command("diff")
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
    (pa, ra), (pb, rb) = _resolve(a, cassette_dir), _resolve(b, cassette_dir)
    req = matching.request_diff(ra.request.canonical(), rb.request.canonical())
    resp: list[str] = []
    if len(ra.responses) != len(rb.responses):
        resp.append(f"responses: {len(ra.responses)} vs {len(rb.responses)}")
    for i, (x, y) in enumerate(zip(ra.responses, rb.responses)):
        if x.status != y.status:
            resp.append(f"responses[{i}].status: {x.status} vs {y.status}")
        resp += [f"responses[{i}].{p}" for p in
                 matching.diff_paths(_response_value(x), _response_value(y), limit=50)]
    if as_json:
        _print_json({"a": str(pa), "b": str(pb), "request": req, "responses": resp})
    else:
        click.echo(f"A: {pa}\nB: {pb}")
        click.echo("request: " + ("same" if not req else "differs at " + ", ".join(req)))
        click.echo("responses: " + ("same" if not resp else "differ at:"))
        for line in resp:
            click.echo(f"  {line}")
    if req or resp:
        sys.exit(1)


# -- llama-stack conversion -------------------------------------------------------------------


def _json_files(sources: Iterable[Path]) -> Iterable[Path]:
    for src in sources:
        if src.is_dir():
            yield from iter_cassette_files(src)
        else:
            yield src


@main.command("import-llama-stack")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@dir_option
def import_command(sources: tuple[Path, ...], cassette_dir: Path) -> None:
    """Convert llama-stack recordings (files or directories) into cassettes in --dir.

    Lossless for what a client sees; each file keeps its test id and what llama-stack's
    recorder needs to export it back.

    \b
    Example: cassette import-llama-stack tests/integration/recordings --dir cassettes
    """
    written = skipped = 0
    taken: set[Path] = set()
    for path in _json_files(sources):
        try:
            rec = cassette.load(path)
        except CassetteError as e:
            click.echo(f"skipped {e}", err=True)
            skipped += 1
            continue
        if rec.source != "llama-stack":
            click.echo(f"skipped {path}: already a cassette", err=True)
            skipped += 1
            continue
        canon = rec.request.canonical()
        # one request may be recorded by several tests (and model lists by several servers):
        # the source file's name keeps them apart
        tag = hashlib.sha256(path.name.encode()).hexdigest()[:8]
        target = layout_path(cassette_dir, canon, rec.request.url, model_of(rec.request), tag)
        n = 1
        while target in taken:
            n += 1
            target = target.with_name(f"{target.stem.rsplit('~', 1)[0]}~{n}.json")
        taken.add(target)
        atomic_write(target, cassette.dumps(rec))
        written += 1
    click.echo(f"imported {written} recordings into {cassette_dir}"
               + (f", skipped {skipped}" if skipped else ""))
    if skipped and not written:
        sys.exit(1)


@main.command("export-llama-stack")
@click.argument("refs", nargs=-1, required=True, metavar="CASSETTE...")
@dir_option
@click.option("--to", "target", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory to write llama-stack recordings into.")
@click.option("--test-id", default=None, help="Test id to record (default: the cassette's own).")
def export_command(refs: tuple[str, ...], cassette_dir: Path, target: Path,
                   test_id: str | None) -> None:
    """Write cassettes as files llama-stack's recorder loads, named by its hash.

    \b
    Example: cassette export-llama-stack cassettes/api.openai.com --to tests/integration/recordings
    """
    recordings: list[tuple[Path, Recording]] = []
    for ref in refs:
        if Path(ref).is_dir():
            for path in iter_cassette_files(Path(ref)):
                try:
                    recordings.append((path, cassette.load(path)))
                except CassetteError as e:
                    raise click.ClickException(str(e)) from None
        else:
            recordings.append(_resolve(ref, cassette_dir))
    for path, rec in recordings:
        if len(rec.responses) > 1:
            click.echo(f"{path}: llama-stack keeps one answer per request; exporting the first "
                       f"of {len(rec.responses)}", err=True)
        name, doc = llama_stack.export(rec, test_id)
        atomic_write(target / name, json.dumps(doc, indent=2).encode() + b"\n")
    click.echo(f"exported {len(recordings)} recordings to {target}")


# -- run and proxy ---------------------------------------------------------------------------

mode_option = click.option("--mode", type=click.Choice(MODES), default="replay", show_default=True,
                           help="replay, record, auto (replay hits, record misses), passthrough.")
pace_option = click.option("--pace", default="0", show_default=True,
                           help="Stream replay speed: 0 at once, 1 recorded gaps, 0.5 twice as fast.")
set_option = click.option("--set", "extra", multiple=True, metavar="NAME=VALUE",
                          help="Any other mitmproxy or cassette option, e.g. ssl_insecure=true.")


def _options(pace: str, extra: Iterable[str]) -> dict[str, str]:
    opts = {"cassette_pace": pace}
    for item in extra:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--set")
        opts[name] = value
    return opts


def _fail_start(e: ProxyStartError) -> NoReturn:
    lines = [l for l in str(e).splitlines() if "Error" in l or "cassette" in l or "error" in l]
    raise click.UsageError("the proxy did not start:\n" + "\n".join(lines or [str(e)]))


@main.command("run", context_settings={"ignore_unknown_options": True})
@mode_option
@pace_option
@dir_option
@set_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run_command(mode: str, pace: str, cassette_dir: Path, extra: tuple[str, ...],
                command: tuple[str, ...]) -> None:
    """Run COMMAND through a fresh proxy; exit with its code, or 1 on a replay miss.

    \b
    Example: cassette run --mode replay -- pytest -q
    """
    with tempfile.TemporaryDirectory(prefix="cassette-run-") as tmp:
        summary_path = Path(tmp) / "summary.json"
        opts = _options(pace, extra) | {"cassette_summary": str(summary_path)}
        try:
            proxy = start_proxy(cassette_dir, mode, confdir=Path(tmp) / "ca", options=opts)
        except ProxyStartError as e:
            _fail_start(e)
        try:
            code = subprocess.call(list(command), env=proxy.client_env())
        except FileNotFoundError:
            proxy.stop()
            raise click.UsageError(f"command not found: {command[0]}") from None
        except KeyboardInterrupt:
            code = 130
        proxy.stop()
        try:
            summary = orjson.loads(summary_path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            click.echo("cassette: the proxy wrote no summary; its log:\n" + proxy.log, err=True)
            sys.exit(code or 1)
    for message in summary["miss_messages"]:
        click.echo(message, err=True)
    click.echo(f"cassette: {summary['hits']} hits, {summary['recorded']} recorded, "
               f"{summary['misses']} misses, {len(summary['unused'])} unused recordings"
               f" (of {summary['recordings']})", err=True)
    if code == 0 and summary["misses"]:
        sys.exit(1)
    sys.exit(code)


@main.command("proxy")
@mode_option
@pace_option
@dir_option
@set_option
@click.option("--port", default=8080, show_default=True, help="Port on 127.0.0.1.")
@click.option("--confdir", type=click.Path(path_type=Path), default=Path("~/.mitmproxy"),
              show_default=True, help="Where mitmproxy keeps its CA.")
def proxy_command(mode: str, pace: str, cassette_dir: Path, extra: tuple[str, ...], port: int,
                  confdir: Path) -> None:
    """Run the proxy in the foreground and print how to point a client at it.

    \b
    Example: cassette proxy --mode record --port 8080
    """
    confdir = confdir.expanduser()
    url = f"http://127.0.0.1:{port}"
    ca = confdir / "mitmproxy-ca-cert.pem"
    click.echo(f"cassette proxy: {mode} mode over {cassette_dir} on {url}. Point a client at it:\n"
               f"  export HTTPS_PROXY={url} HTTP_PROXY={url}\n"
               f"  export SSL_CERT_FILE={ca} REQUESTS_CA_BUNDLE={ca} CURL_CA_BUNDLE={ca} "
               f"NODE_EXTRA_CA_CERTS={ca}\n"
               "Stop with Ctrl-C.", err=True)
    args = [mitmdump_executable(), "--listen-host", "127.0.0.1", "--set", f"listen_port={port}",
            "--set", f"confdir={confdir}", "-s", str(ADDON_SCRIPT),
            "--set", f"cassette_dir={cassette_dir}", "--set", f"cassette_mode={mode}"]
    for name, value in _options(pace, extra).items():
        args += ["--set", f"{name}={value}"]
    os.execv(args[0], args)


if __name__ == "__main__":
    main()
