"""``cassette diff``: what changed between two recordings, or in every cassette changed since a
git revision (after a refresh, before a commit): the request's JSON paths, and in what the user
saw the shape changes a reviewer must see apart from token-level noise (``changes.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from proxy_addon import formats
from proxy_addon.cli.common import json_option, print_json, resolve_all
from proxy_addon.cli.options import dir_option
from proxy_addon.formats import cassette
from proxy_addon.matching import canonical, difference
from proxy_addon.model import Body, CassetteError, RecordedResponse, Recording
from proxy_addon.review.changes import Changes, compare
from proxy_addon.store.layout import is_cassette_name

STATUS = {"A": "added", "D": "deleted", "M": "modified", "T": "modified"}


def _body_value(body: Body | None) -> Any:
    return None if body is None else body.value


def _response_value(resp: RecordedResponse) -> Any:
    if resp.websocket is not None:  # as in the file, without the times
        section = cassette.websocket_to_dict(resp.websocket)
        return {
            "websocket": {
                "messages": [{k: v for k, v in m.items() if k != "t"} for m in section["messages"]],
                "close": {k: v for k, v in section.get("close", {}).items() if k != "t"},
            }
        }
    if resp.stream is not None:
        return {"stream": [e.data for e in resp.stream.events], "complete": resp.stream.complete}
    return {"body": _body_value(resp.body)}


def response_paths(ra: Recording, rb: Recording) -> list[str]:
    """JSON paths where two recordings' responses differ."""
    out: list[str] = []
    if len(ra.responses) != len(rb.responses):
        out.append(f"responses: {len(ra.responses)} vs {len(rb.responses)}")
    for i, (x, y) in enumerate(zip(ra.responses, rb.responses)):
        if x.status != y.status:
            out.append(f"responses[{i}].status: {x.status} vs {y.status}")
        out += [
            f"responses[{i}].{p}"
            for p in difference.diff_paths(_response_value(x), _response_value(y), limit=50)
        ]
    return out


def request_paths(ra: Recording, rb: Recording) -> list[str]:
    return difference.request_diff(
        canonical.canonicalize(canonical.Request.recorded(ra.request)),
        canonical.canonicalize(canonical.Request.recorded(rb.request)),
    )


def _echo_seen(changes: Changes, indent: str = "") -> None:
    if not changes:
        click.echo(f"{indent}what the user saw: same")
        return
    click.echo(f"{indent}shape:" + ("" if changes.shape else " same"))
    for line in changes.shape:
        click.echo(f"{indent}  {line}")
    if changes.noise:
        click.echo(f"{indent}noise:")
        for line in changes.noise:
            click.echo(f"{indent}  {line}")


@click.command("diff")
@click.argument("refs", metavar="[A B]", nargs=-1)
@click.option(
    "--since",
    "rev",
    metavar="REV",
    help="Every cassette under --dir changed since this git revision (e.g. HEAD).",
)
@dir_option
@json_option
def diff_command(refs: tuple[str, ...], rev: str | None, cassette_dir: Path, as_json: bool) -> None:
    """Show what changed between two recordings, or in every cassette changed since a git
    revision: the request's JSON paths, and in what the user saw, shape changes (status, tool
    calls, finish reasons, stream or body, event types...) apart from noise (wording, token
    counts). Exits 1 when anything differs, 0 when nothing does, like diff.

    \b
    Example: cassette diff 3f2a9c 8b01de
             cassette diff --since HEAD        (after cassette run --mode refresh)
    """
    if rev is not None:
        if refs:
            raise click.UsageError("give either --since REV or two recordings A B, not both")
        sys.exit(_diff_since(rev, cassette_dir, as_json))
    if len(refs) != 2:
        raise click.UsageError("give two recordings A B (a file or a key prefix), or --since REV")
    (pa, ra), (pb, rb) = resolve_all(refs, cassette_dir)
    req, resp, seen = request_paths(ra, rb), response_paths(ra, rb), compare(ra, rb)
    if as_json:
        print_json(
            {
                "a": str(pa),
                "b": str(pb),
                "request": req,
                "responses": resp,
                "shape": seen.shape,
                "noise": seen.noise,
            }
        )
    else:
        click.echo(f"A: {pa}\nB: {pb}")
        click.echo("request: " + ("same" if not req else "differs at " + ", ".join(req)))
        click.echo("responses: " + ("same" if not resp else "differ at:"))
        for line in resp:
            click.echo(f"  {line}")
        _echo_seen(seen)
    if req or resp:
        sys.exit(1)


# ---------------------------------------------------------------------------------------------
# --since REV


def run_git(args: list[str], cwd: Path) -> bytes:
    """git's output (``--since`` of diff and volatile); a usage error naming git's message."""
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=60)
    except FileNotFoundError:
        raise click.UsageError("--since needs git, which is not installed") from None
    if done.returncode != 0:
        raise click.UsageError(
            f"git {' '.join(args)}: " + done.stderr.decode("utf-8", "replace").strip()
        )
    return done.stdout


def changed_since(rev: str, cassette_dir: Path) -> tuple[Path, list[tuple[str, str]]]:
    """The repository's top directory, and the cassette files under ``cassette_dir`` changed
    against ``rev`` in the working tree (untracked new files too): (status letter, path
    relative to the top)."""
    if not cassette_dir.is_dir():
        raise click.UsageError(f"no cassette directory at {cassette_dir} (use --dir)")
    top = Path(run_git(["rev-parse", "--show-toplevel"], cassette_dir).decode().strip())
    where = os.path.relpath(cassette_dir.resolve(), top.resolve())
    fields = run_git(["diff", "--name-status", "-z", "--no-renames", rev, "--", where], top).split(
        b"\0"
    )
    found = [(fields[i].decode(), fields[i + 1].decode()) for i in range(0, len(fields) - 1, 2)]
    found += [
        ("A", name.decode())
        for name in run_git(
            ["ls-files", "-z", "--others", "--exclude-standard", "--", where], top
        ).split(b"\0")
        if name
    ]
    return top, sorted(
        (status[0], path)
        for status, path in found
        if is_cassette_name(os.path.relpath(path, where))
    )


def _recording_or_why(read: Callable[[], Recording]) -> Recording | str:
    try:
        return read()
    except CassetteError as e:
        return f"cannot read: {e.reason}"


def _one_file(rev: str, top: Path, status: str, name: str) -> dict[str, Any]:
    """What changed in one cassette file since ``rev``."""
    item: dict[str, Any] = {
        "file": name,
        "status": STATUS.get(status, status),
        "request": [],
        "shape": [],
        "noise": [],
    }
    old = (
        _recording_or_why(
            lambda: formats.loads(run_git(["show", f"{rev}:{name}"], top), f"{rev}:{name}")
        )
        if status != "A"
        else None
    )
    new = _recording_or_why(lambda: formats.load(top / name)) if status != "D" else None
    for version in (old, new):
        if isinstance(version, str):
            item["shape"].append(version)
    if isinstance(old, Recording) and isinstance(new, Recording):
        item["request"] = request_paths(old, new)
        seen = compare(old, new)
        item["shape"] += seen.shape
        item["noise"] = seen.noise
    return item


def _diff_since(rev: str, cassette_dir: Path, as_json: bool) -> int:
    top, changed = changed_since(rev, cassette_dir)
    items = [_one_file(rev, top, status, name) for status, name in changed]
    if as_json:
        print_json({"since": rev, "files": items})
        return 1 if items else 0
    for item in items:
        click.echo(f"{item['status']}: {item['file']}")
        if item["status"] != "modified":
            for line in item["shape"]:  # an added or deleted file that cannot be read
                click.echo(f"  {line}")
            continue
        if item["request"]:
            click.echo("  request: differs at " + ", ".join(item["request"]))
        _echo_seen(Changes(item["shape"], item["noise"]), "  ")
    shaped = sum(1 for i in items if i["status"] == "modified" and i["shape"])
    click.echo(
        f"{len(items)} cassette files changed since {rev}"
        + (f", {shaped} with shape changes" if shaped else "")
    )
    return 1 if items else 0
