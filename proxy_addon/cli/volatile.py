"""``cassette volatile``: the values that change from one recording of the same tests to the next
(a timestamp, a UUID, a counter), found by comparing two recordings rather than guessed, with the
``cassette_normalize`` / ``cassette_ignore`` options that would make them match
(``review/proposals.py``). Two directories (two runs), or a git revision of ``--dir`` against the
working tree. The options are printed for the user to apply; nothing is rewritten."""

from __future__ import annotations

import io
import os
import shlex
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import click

from proxy_addon.cli.common import json_option, load_store, print_json
from proxy_addon.cli.diff import run_git
from proxy_addon.cli.options import dir_option
from proxy_addon.model import CassetteError
from proxy_addon.review.proposals import Proposal, Recorded, propose


def _recordings(root: Path) -> list[Recorded]:
    """Every readable recording's request under ``root``, named relative to it."""
    store = load_store(root, validate=False)
    out = []
    for entry in store.index.all_entries():
        try:
            out.append(Recorded(entry.path.relative_to(root).as_posix(), entry.request))
        except CassetteError:  # unreadable since it was indexed: left out, as a bad file is
            continue
    return sorted(out, key=lambda r: r.name)


def _at_revision(rev: str, cassette_dir: Path, into: Path) -> Path:
    """``cassette_dir`` as it was at the git revision ``rev``, unpacked under ``into``."""
    if not cassette_dir.is_dir():
        raise click.UsageError(f"no cassette directory at {cassette_dir} (use --dir)")
    top = Path(run_git(["rev-parse", "--show-toplevel"], cassette_dir).decode().strip())
    where = os.path.relpath(cassette_dir.resolve(), top.resolve())
    archive = run_git(["archive", "--format=tar", rev, "--", where], top)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / where


def _as_json(proposal: Proposal, a: str, b: str) -> dict[str, Any]:
    return {
        "a": a,
        "b": b,
        "pairs": [
            {
                "a": pair.a,
                "b": pair.b,
                "matches": pair.matches,
                "differences": [
                    {
                        "path": d.path,
                        "a": d.a,
                        "b": d.b,
                        "shape": d.shape,
                        "values": [{"form": f, "a": a, "b": b} for f, a, b in d.values],
                        "fix": d.fix(),
                    }
                    for d in pair.differences
                ],
            }
            for pair in proposal.pairs
        ],
        "same": proposal.same,
        "only_a": proposal.only_a,
        "only_b": proposal.only_b,
        "normalize": ([",".join(proposal.presets)] if proposal.presets else []) + proposal.rules,
        "ignore": proposal.ignore,
        "options": proposal.options(),
    }


def _echo(proposal: Proposal, a: str, b: str) -> None:
    click.echo(f"a: {a}\nb: {b}")
    for pair in proposal.pairs:
        click.echo(f"{pair.a}\n  ↔ {pair.b}")
        for d in pair.differences:
            if not d.values:
                click.echo(f"  {d.path}: {d.shape}: {d.a!r} → {d.b!r}")
            for form, a, b in d.values:
                click.echo(f"  {d.path}: {form}: {a!r} → {b!r}")
            click.echo(
                f"    take: {d.fix()}" if d.fixes else "    not a volatile value: nothing proposed"
            )
    click.echo(
        f"{len(proposal.pairs)} pairs of recordings differ, {proposal.same} the same in both, "
        f"{len(proposal.only_a)} only in a, {len(proposal.only_b)} only in b"
    )
    for side, names in (("a", proposal.only_a), ("b", proposal.only_b)):
        for name in names:
            click.echo(f"  only in {side}: {name}")
    options = proposal.options()
    if options:
        click.echo(
            "proposed (cassette run --set ..., pytest --cassette-set ..., mitmdump --set ...):"
        )
        for option in options:
            click.echo(f"  --set {shlex.quote(option)}")
    matching = sum(p.matches for p in proposal.pairs)
    if proposal.pairs:
        click.echo(
            f"with {'these' if options else 'no options'}, {matching} of "
            f"{len(proposal.pairs)} pairs match"
            + (
                ""
                if matching == len(proposal.pairs)
                else " (the others differ in more than values)"
            )
        )


@click.command("volatile")
@click.argument("dirs", metavar="[A B]", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--since",
    "rev",
    metavar="REV",
    help="Compare --dir as it was at this git revision (e.g. HEAD) with the working tree.",
)
@dir_option
@json_option
def volatile_command(
    dirs: tuple[Path, ...], rev: str | None, cassette_dir: Path, as_json: bool
) -> None:
    """Find the values that change between two recordings of the same tests (timestamps,
    UUIDs, ids, counters), with their JSON paths and shapes, and propose the
    cassette_normalize and cassette_ignore options that make the two match, checked on them.
    Record twice (two directories), or re-record and compare with git. Exits 1 when the
    recordings differ, 0 when they do not.

    \b
    Example: cassette volatile run1/cassettes run2/cassettes
             cassette volatile --since HEAD      (after re-recording into --dir)
    """
    with tempfile.TemporaryDirectory(prefix="cassette-volatile-") as scratch:
        if rev is not None:
            if dirs:
                raise click.UsageError("give either --since REV or two directories A B, not both")
            a_dir, b_dir = _at_revision(rev, cassette_dir, Path(scratch)), cassette_dir
            a_name, b_name = f"{cassette_dir} at {rev}", str(cassette_dir)
        elif len(dirs) == 2:
            (a_dir, b_dir), (a_name, b_name) = dirs, (str(dirs[0]), str(dirs[1]))
        else:
            raise click.UsageError("give two cassette directories A B, or --since REV")
        # (at a revision before the directory existed, everything is new)
        older = _recordings(a_dir) if rev is None or a_dir.is_dir() else []
        proposal = propose(older, _recordings(b_dir))
    if as_json:
        print_json(_as_json(proposal, a_name, b_name))
    else:
        _echo(proposal, a_name, b_name)
    differ = proposal.pairs or proposal.only_a or proposal.only_b
    sys.exit(1 if differ else 0)
