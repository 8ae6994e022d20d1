"""What the ``cassette`` commands share: options, output (rich on a terminal, plain in a pipe
or a CI log), and finding a cassette by path or key prefix."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Table

from proxy_addon import formats
from proxy_addon.model import CassetteError, Recording
from proxy_addon.redaction.secret_rules import Secrets
from proxy_addon.store import CassetteStore
from proxy_addon.store.entries import Entry

json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")


def secret_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--redact-field`` and ``--redact-header``, as the proxy's ``cassette_redact_fields``
    and ``cassette_redact_headers``; the command turns them into rules with ``secrets_of``."""
    command = click.option(
        "--redact-header",
        "redact_headers",
        multiple=True,
        metavar="NAME",
        help="Another header whose value is a secret (repeat it).",
    )(command)
    return click.option(
        "--redact-field",
        "redact_fields",
        multiple=True,
        metavar="NAME_OR_PATH",
        help="Another field whose value is a secret: a name, at any depth, or a "
        "dotted path from a body's root (repeat it).",
    )(command)


def secrets_of(fields: tuple[str, ...], headers: tuple[str, ...]) -> Secrets:
    """The rules the proxy records with: built in, these names, and the values of this
    process's credential-like environment variables."""
    try:
        return Secrets.from_settings(fields, headers, os.environ)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--redact-field") from None


def console() -> Console:
    """Colour and boxes on a terminal; plain, wide, uncoloured text in a pipe or a CI log."""
    out = Console()
    if not out.is_terminal:
        out = Console(width=max(out.width, 200), no_color=True, highlight=False)
    return out


def table(out: Console, *columns: str) -> Table:
    if out.is_terminal:
        rows = Table(*columns, header_style="bold")
    else:
        rows = Table(*columns, box=None, pad_edge=False, show_edge=False, header_style="")
    for col in rows.columns:
        col.overflow = "ellipsis"
        col.no_wrap = True
    return rows


def print_json(value: Any) -> None:
    try:
        text = orjson.dumps(value, option=orjson.OPT_INDENT_2)
    except TypeError:  # a file name that is not UTF-8 (held with surrogate escapes)
        text = orjson.dumps(printable(value), option=orjson.OPT_INDENT_2)
    click.echo(text.decode())


def printable(value: Any) -> Any:
    """``value`` with every string JSON can hold: a byte that is not UTF-8 shown as ``\\xff``."""
    if isinstance(value, str):
        try:
            raw = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a surrogate no file name decoding made
            raw = value.encode("utf-8", "backslashreplace")
        return raw.decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [printable(v) for v in value]
    return value


def load_store(cassette_dir: Path, validate: bool = True) -> CassetteStore:
    """The directory's store; ``validate``: every file read whole, so all broken ones are
    reported (else only requests, enough to find a recording by its key)."""
    if not cassette_dir.is_dir():
        raise click.UsageError(
            f"no cassette directory at {cassette_dir} (use --dir or CASSETTE_DIR)"
        )
    store = CassetteStore(cassette_dir, validate=validate)
    store.load()
    return store


def entries(store: CassetteStore) -> list[Entry]:
    return sorted(store.index.all_entries(), key=lambda e: str(e.path))


def resolve(ref: str, cassette_dir: Path) -> tuple[Path, Recording]:
    """A cassette by file path, or by a unique prefix of its key or of its file name."""
    return resolve_all([ref], cassette_dir)[0]


def resolve_all(refs: Sequence[str], cassette_dir: Path) -> list[tuple[Path, Recording]]:
    """Each cassette by file path, or by a unique prefix of its key or of its file name; the
    directory is indexed once, and only when a reference is not a file."""
    store: CassetteStore | None = None
    out = []
    for ref in refs:
        try:
            if Path(ref).is_file():
                out.append((Path(ref), formats.load(ref)))
                continue
            store = store or load_store(cassette_dir, validate=False)
            entry = _by_prefix(ref, store, cassette_dir)
            out.append((entry.path, entry.recording))
        except CassetteError as e:
            raise click.ClickException(str(e)) from None
    return out


def _by_prefix(ref: str, store: CassetteStore, cassette_dir: Path) -> Entry:
    found = [
        e
        for e in entries(store)
        if e.key.startswith(ref)
        or e.path.stem.startswith(ref)
        or e.path.stem.rsplit("-", 1)[-1].startswith(ref)
    ]
    if not found:
        raise click.BadParameter(
            f"no cassette file or key prefix {ref!r} in {cassette_dir}", param_hint="CASSETTE"
        )
    if len({e.path for e in found}) > 1:
        names = "\n  ".join(str(e.path) for e in found[:10])
        raise click.BadParameter(
            f"{ref!r} is ambiguous, it matches:\n  {names}", param_hint="CASSETTE"
        )
    return found[0]
