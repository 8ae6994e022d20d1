"""``cassette verify`` and ``cassette scrub``: the files on disk against the format and against
the secret rules the proxy records with (``redact.scrub``): verify is its dry run and fails on
any finding; scrub applies it in place, atomically, and says what it changed. A file's path
(a test's directory, a model in its name) is checked by the same rules; scrub cannot rename
it (the proxy would not find it again), so it says so and fails. Paths are printed with their
secrets replaced."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import click
import orjson

from proxy_addon import formats
from proxy_addon.cli.common import secret_options, secrets_of
from proxy_addon.cli.options import dir_option
from proxy_addon.formats import cassette, rewrite
from proxy_addon.model import CassetteError
from proxy_addon.redaction import redact
from proxy_addon.redaction.secret_rules import Secrets
from proxy_addon.store import age
from proxy_addon.store.layout import iter_cassette_files
from proxy_addon.store.writer import atomic_write


@dataclass
class Checked:
    """One file against the rules: why it cannot be read (or rewritten), the secrets found,
    and its bytes with them replaced (None when there is nothing to replace)."""

    problems: list[str] = field(default_factory=list)
    findings: list[redact.Finding] = field(default_factory=list)
    scrubbed: bytes | None = None
    in_path: list[str] = field(default_factory=list)  # what its path holds, by which layer
    invalid: list[str] = field(default_factory=list)  # readable, but wrong where verify looks


_RENAME = "re-record it: scrub does not rename files"


def check(path: Path, secrets: Secrets, root: Path, scrubbing: bool = False) -> Checked:
    """A cassette of ours is scrubbed as a recording; a llama-stack file as a document, so that
    it keeps its format. Its path under ``root`` is checked too. ``scrubbing``: also the file's
    bytes with the secrets replaced and nothing else changed (``formats.rewrite``)."""
    out = Checked()
    hits = secrets.replace_in_name(str(path.relative_to(root)))[1]
    out.in_path = [f"{what} (by {layer})" for layer, what in hits]
    try:
        raw = formats.read_bytes(path)  # regular files only, within the size limit
        rec = formats.loads(raw, path)
    except CassetteError as e:
        out.problems.append(e.reason)
        return out
    out.invalid += [
        f"responses[{i}].recorded_at: {r.recorded_at!r} is not an ISO 8601 time "
        "(so the recording never counts as stale)"
        for i, r in enumerate(rec.responses)
        if r.recorded_at is not None and age.parse_time(r.recorded_at) is None
    ]
    if rec.source == "llama-stack":
        before = orjson.loads(raw)
        after, out.findings = redact.scrub_document(before, secrets)
    else:
        scrubbed, out.findings = redact.scrub(rec, secrets)
        if out.findings and scrubbing:  # the two as the writer lays them out
            before = orjson.loads(cassette.dumps(rec))
            after = orjson.loads(cassette.dumps(scrubbed))
    if out.findings and scrubbing:
        try:
            out.scrubbed = rewrite.rewrite(raw, before, after)
        except rewrite.NotExact as e:
            out.problems.append(f"cannot be rewritten changing only its secrets: {e}")
    return out


def _files(cassette_dir: Path) -> list[Path]:
    if not cassette_dir.is_dir():
        raise click.UsageError(f"no cassette directory at {cassette_dir}")
    return list(iter_cassette_files(cassette_dir))


@click.command("verify")
@dir_option
@secret_options
def verify_command(
    cassette_dir: Path, redact_fields: tuple[str, ...], redact_headers: tuple[str, ...]
) -> None:
    """Check every file parses, fits the format, and holds no secret; exit 1 if not.

    Secrets are found by the rules the proxy records with: secret names at any depth (in
    JSON inside strings too), the values of credential-like environment variables, key
    shapes, in every string and in the text a stream's events spell together. Each is named
    by file and JSON path; `cassette scrub` replaces them. A file's path is checked too.

    \b
    Example (CI or pre-commit): cassette verify --dir cassettes
    """
    secrets = secrets_of(redact_fields, redact_headers)
    bad = total = 0
    for path in _files(cassette_dir):
        total += 1
        checked = check(path, secrets, cassette_dir)
        shown = secrets.replace_in_name(str(path))[0]
        for line in (
            checked.problems
            + checked.invalid
            + [f"its path holds {what} ({_RENAME})" for what in checked.in_path]
            + [f"{f} (run cassette scrub)" for f in checked.findings]
        ):
            click.echo(f"{shown}: {line}")
        bad += bool(checked.problems or checked.invalid or checked.findings or checked.in_path)
    click.echo(f"{total} files checked, {bad} bad", err=bad > 0)
    if bad:
        sys.exit(1)


@click.command("scrub")
@dir_option
@secret_options
def scrub_command(
    cassette_dir: Path, redact_fields: tuple[str, ...], redact_headers: tuple[str, ...]
) -> None:
    """Replace every secret in the files on disk, in place, by the rules the proxy records
    with; print each change (file, JSON path, layer). Files are rewritten atomically; a file
    with nothing to replace is left as it is. A file whose path holds a secret is named (and
    the command exits 1): it is not renamed, re-record it.

    \b
    Example (clean what was recorded before): cassette scrub --dir cassettes && cassette verify
    """
    secrets = secrets_of(redact_fields, redact_headers)
    total = changed = replaced = unreadable = named = 0
    for path in _files(cassette_dir):
        total += 1
        checked = check(path, secrets, cassette_dir, scrubbing=True)
        shown = secrets.replace_in_name(str(path))[0]
        for problem in checked.problems:
            click.echo(f"{shown}: skipped: {problem}", err=True)
        for what in checked.in_path:
            click.echo(f"{shown}: its path holds {what}: {_RENAME}", err=True)
        unreadable += bool(checked.problems)
        named += bool(checked.in_path)
        if checked.scrubbed is None:
            continue
        atomic_write(path, checked.scrubbed)
        for finding in checked.findings:
            click.echo(f"{shown}: {finding}: replaced")
        changed += 1
        replaced += len(checked.findings)
    click.echo(
        f"{total} files checked: "
        + (f"{replaced} secrets replaced in {changed} files" if changed else "nothing to scrub")
        + (f"; {unreadable} files skipped, named above" if unreadable else "")
        + (f"; {named} files have a secret in their path" if named else "")
    )
    if unreadable or named:
        sys.exit(1)
