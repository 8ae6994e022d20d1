"""``cassette explain``: for one request, what each ``cassette_normalize`` preset (and rule)
replaces in it, and which recording answers it: exactly, only after normalising (with the values
that then differ, as asked and as recorded), or none (the nearest, and where it differs).

The request is what a user has when a test misses: a cassette of it (recorded into a scratch
directory, or the new file ``--mode auto`` wrote next to the old ones: a file inside ``--dir``
is left out of the recordings it is compared with), or its JSON body with ``--url``."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import orjson

from proxy_addon import formats
from proxy_addon.cli.common import json_option, print_json, secrets_of
from proxy_addon.cli.options import dir_option
from proxy_addon.matching import canonical, normalize, volatile
from proxy_addon.matching.jsonpath import parse_path
from proxy_addon.matching.presets import PRESETS
from proxy_addon.model import CassetteError
from proxy_addon.serving.misses import clip
from proxy_addon.store.index import Index

ALL_PRESETS = ",".join(PRESETS)


def _request(source: str, url: str | None, method: str) -> tuple[canonical.Request, Path | None]:
    """The request to explain: a cassette's, or a JSON body sent to ``url``; and the file it
    came from."""
    try:  # a FIFO or a device named as the file is refused, not waited on
        raw = sys.stdin.buffer.read() if source == "-" else formats.read_bytes(source)
    except CassetteError as e:
        raise click.BadParameter(str(e), param_hint="REQUEST") from None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise click.BadParameter(f"{source} is not JSON: {e}", param_hint="REQUEST") from None
    if isinstance(doc, dict) and "request" in doc and ("responses" in doc or "format" in doc):
        try:
            recorded = formats.loads(raw, source).request
        except CassetteError as e:
            raise click.ClickException(str(e)) from None
        return canonical.Request.recorded(recorded), None if source == "-" else Path(source)
    if url is None:
        raise click.UsageError(
            "REQUEST is a JSON body: give the URL it is sent to with --url "
            "(e.g. https://api.openai.com/v1/chat/completions)"
        )
    return canonical.Request.from_url(method, url, "application/json", raw), None


def _leave_out(index: Index, file: Path | None) -> None:
    """The request's own file, when it lies in the directory: it would answer itself."""
    if file is None:
        return
    own = file.resolve()
    for entry in [e for e in index.all_entries() if e.path.resolve() == own]:
        index.entries.remove(entry)


def explain(
    request: canonical.Request, index: Index, normalizer: normalize.Normalizer
) -> dict[str, Any]:
    """What each preset and rule replaces in ``request``, and what answers it in ``index``
    (whose rules hold ``normalizer``)."""
    before = replace(index.rules, normalize=None)
    asked = canonical.canonicalize(request, before)
    steps = [(name, normalize.Normalizer((name,))) for name in PRESETS] + [
        (f"rule {p.pattern}={r}", normalize.Normalizer((), ((p, r),))) for p, r in normalizer.rules
    ]
    replaces = {
        name: [
            {"path": f.path, "value": f.original, "as": f.placeholder, "form": f.form}
            for f in volatile.replacements(asked, one)
        ]
        for name, one in steps
    }
    canon = canonical.canonicalize(request, index.rules)
    out: dict[str, Any] = {
        "request": clip(canon.describe()),
        "normalize": normalizer.describe(),
        "replaces": replaces,
        "exact": None,
        "normalised": None,
        "nearest": None,
    }
    found = index.find(canon)
    if found is not None and not found.normalised:
        out["exact"] = str(found.entries[0].path)
    elif found is not None:
        entry = found.entries[0]
        recorded = index.canonical(entry.request, before)
        out["normalised"] = {
            "file": str(entry.path),
            "replaced": [
                {"path": h.path, "asked": h.asked, "recorded": h.recorded, "form": h.form}
                for h in volatile.hidden(asked, recorded, normalizer)
            ],
            "passed_over": sorted({str(e.path) for e in found.passed_over}),
        }
    else:
        near = index.nearest(canon)
        if near is not None:
            out["nearest"] = {"file": str(near[0].path), "differs_at": near[1]}
    return out


def _echo(out: dict[str, Any]) -> None:
    click.echo(f"request: {out['request']}")
    click.echo("what each preset replaces:")
    width = max(len(name) for name in out["replaces"])
    for name, found in out["replaces"].items():
        shown = "; ".join(f"{f['path']} {f['value']!r} → {f['as']} ({f['form']})" for f in found)
        click.echo(f"  {name + ':':<{width + 1}} {shown or 'nothing'}")
    if out["exact"]:
        click.echo(f"answered exactly by {out['exact']}")
        return
    click.echo("no recording matches it as it is")
    if out["normalised"]:
        answer = out["normalised"]
        click.echo(f"with cassette_normalize={out['normalize']}: answered by {answer['file']}")
        for h in answer["replaced"]:
            click.echo(f"  {h['path']}: {h['asked']!r} (asked) → {h['recorded']!r} (recorded)")
        for other in answer["passed_over"]:
            click.echo(f"  chosen over {other} (its values differ more)")
    else:
        click.echo(f"with cassette_normalize={out['normalize']}: no recording answers it either")
        if out["nearest"]:
            near = out["nearest"]
            click.echo(
                f"  nearest: {near['file']}, which differs at: {', '.join(near['differs_at'])}"
            )


@click.command("explain")
@click.argument("source", metavar="REQUEST")
@click.option("--url", help="The URL a JSON body REQUEST is sent to.")
@click.option("--method", default="POST", show_default=True, help="The method of a JSON body.")
@click.option(
    "--normalize",
    "normalize_values",
    multiple=True,
    metavar="VALUE",
    help=f"cassette_normalize values to match with (repeat it); default: {ALL_PRESETS}.",
)
@click.option(
    "--ignore", "ignore", multiple=True, metavar="PATH", help="cassette_ignore paths (repeat it)."
)
@dir_option
@json_option
def explain_command(
    source: str,
    url: str | None,
    method: str,
    normalize_values: tuple[str, ...],
    ignore: tuple[str, ...],
    cassette_dir: Path,
    as_json: bool,
) -> None:
    """Show, for one request, what each cassette_normalize preset replaces in it and which
    recording answers it: exactly, only after normalising (and the values that differ), or
    none (the nearest, and where it differs). REQUEST is a cassette file (or - for stdin), or
    a JSON body with --url. Exits 0 when a recording answers it, 1 when none does.

    \b
    Example: cassette explain /tmp/new/api.openai.com/v1/chat/completions/gpt-4o-1a2b.json
             cassette explain body.json --url https://api.openai.com/v1/chat/completions
    """
    if not cassette_dir.is_dir():
        raise click.UsageError(f"no cassette directory at {cassette_dir} (use --dir)")
    try:
        normalizer = normalize.compile_rules(normalize_values or [ALL_PRESETS])
        paths = tuple(parse_path(p) for p in ignore)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    if normalizer is None:  # only empty values: nothing to explain with
        raise click.BadParameter(
            "give a preset name or a PATTERN=REPLACEMENT rule", param_hint="--normalize"
        )
    request, file = _request(source, url, method.upper())
    index = Index(cassette_dir, canonical.Rules(paths, secrets_of((), ()), normalizer))
    index.load()
    _leave_out(index, file)
    out = explain(request, index, normalizer)
    if as_json:
        print_json(out)
    else:
        _echo(out)
    sys.exit(0 if out["exact"] or out["normalised"] else 1)
