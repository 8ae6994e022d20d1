"""Converting between llama-stack's recordings and our cassettes: ``import-llama-stack`` and
``export-llama-stack``."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import click

from proxy_addon import formats
from proxy_addon.cli.common import resolve_all, secret_options, secrets_of
from proxy_addon.cli.options import dir_option
from proxy_addon.formats import cassette, llama_stack_export
from proxy_addon.matching import canonical
from proxy_addon.model import CassetteError
from proxy_addon.redaction import redact
from proxy_addon.store.layout import iter_cassette_files, layout_path, model_of
from proxy_addon.store.writer import atomic_write


def _json_files(sources: Iterable[Path]) -> Iterable[Path]:
    for src in sources:
        if src.is_dir():
            yield from iter_cassette_files(src)
        else:
            yield src


@click.command("import-llama-stack")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@dir_option
@secret_options
def import_command(
    sources: tuple[Path, ...],
    cassette_dir: Path,
    redact_fields: tuple[str, ...],
    redact_headers: tuple[str, ...],
) -> None:
    """Convert llama-stack recordings (files or directories) into cassettes in --dir.

    Lossless for what a client sees; each file keeps its test id and what llama-stack's
    recorder needs to export it back. Secrets (in the call's arguments too) are replaced as
    the proxy replaces them when it records.

    \b
    Example: cassette import-llama-stack tests/integration/recordings --dir cassettes
    """
    secrets = secrets_of(redact_fields, redact_headers)
    written = skipped = replaced = 0
    taken: set[Path] = set()
    for path in _json_files(sources):
        try:
            rec = formats.load(path)
        except CassetteError as e:
            click.echo(f"skipped {e}", err=True)
            skipped += 1
            continue
        if rec.source != "llama-stack":
            click.echo(f"skipped {path}: already a cassette", err=True)
            skipped += 1
            continue
        rec, findings = redact.scrub(rec, secrets)
        replaced += len(findings)
        canon = canonical.canonicalize(
            canonical.Request.recorded(rec.request), canonical.Rules(secrets=secrets)
        )
        # one request may be recorded by several tests (and model lists by several servers):
        # the source file's name keeps them apart
        tag = hashlib.sha256(os.fsencode(path.name)).hexdigest()[:8]
        target = layout_path(
            cassette_dir, canon, rec.request.url, model_of(rec.request), tag, secrets
        )
        n = 1
        while target in taken:
            n += 1
            target = target.with_name(f"{target.stem.rsplit('~', 1)[0]}~{n}.json")
        taken.add(target)
        atomic_write(target, cassette.dumps(rec))
        written += 1
    click.echo(
        f"imported {written} recordings into {cassette_dir}"
        + (f", {replaced} secrets replaced" if replaced else "")
        + (f", skipped {skipped}" if skipped else "")
    )
    if skipped and not written:
        sys.exit(1)


@click.command("export-llama-stack")
@click.argument("refs", nargs=-1, required=True, metavar="CASSETTE...")
@dir_option
@click.option(
    "--to",
    "target",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write llama-stack recordings into.",
)
@click.option("--test-id", default=None, help="Test id to record (default: the cassette's own).")
def export_command(
    refs: tuple[str, ...], cassette_dir: Path, target: Path, test_id: str | None
) -> None:
    """Write cassettes as files llama-stack's recorder loads, named by its hash.

    \b
    Example: cassette export-llama-stack cassettes/api.openai.com --to tests/integration/recordings
    """
    files = [
        str(p)
        for ref in refs
        for p in (iter_cassette_files(Path(ref)) if Path(ref).is_dir() else [ref])
    ]
    recordings = resolve_all(files, cassette_dir)
    for path, rec in recordings:
        if len(rec.responses) > 1:
            click.echo(
                f"{path}: llama-stack keeps one answer per request; exporting the first "
                f"of {len(rec.responses)}",
                err=True,
            )
        name, doc = llama_stack_export.export(rec, test_id)
        atomic_write(target / name, json.dumps(doc, indent=2).encode() + b"\n")
    click.echo(f"exported {len(recordings)} recordings to {target}")
