"""What a hit that matched only after normalising is told: the values ``cassette_normalize``
replaced (each as the client asked it and as it was recorded), for the summary and the log,
and the recordings it was chosen over. The values come from the comparable forms of both
requests, whose secrets are already left out or replaced. Never fails the answer: a recording
that cannot be read again is noted without its values.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from proxy_addon.matching import volatile
from proxy_addon.matching.canonical import CanonicalRequest
from proxy_addon.model import CassetteError
from proxy_addon.serving.misses import clip
from proxy_addon.store.entries import Entry
from proxy_addon.store.index import Index

VALUE_LIMIT = 120  # characters of a replaced value shown


def note(
    canon: CanonicalRequest, entry: Entry, passed_over: tuple[Entry, ...], index: Index
) -> dict[str, Any]:
    """The summary's record of one such hit: the request, the file that answered it, the values
    replaced (live → recorded) and the files passed over for a nearer original."""
    replaced: list[dict[str, str]] = []
    normalizer = index.rules.normalize
    if normalizer is not None:
        try:
            recorded = index.canonical(
                entry.recording.request, replace(index.rules, normalize=None)
            )
            replaced = [
                {
                    "path": h.path,
                    "live": clip(h.asked, VALUE_LIMIT),
                    "recorded": clip(h.recorded, VALUE_LIMIT),
                    "form": h.form,
                }
                for h in volatile.hidden(canon.original(), recorded, normalizer)
            ]
        except (CassetteError, RecursionError):  # gone since, or too deep to compare
            pass
    return {
        "request": clip(canon.describe()),
        "file": str(entry.path),
        "replaced": replaced,
        "passed_over": sorted({str(e.path) for e in passed_over}),
    }


def log_line(item: dict[str, Any]) -> str:
    """One line for the log: which file answered, and each value as asked → as recorded."""
    values = "; ".join(f"{r['path']} {r['live']!r} → {r['recorded']!r}" for r in item["replaced"])
    line = f"cassette: {item['request']} answered after normalising, from {item['file']}" + (
        f": {values}" if values else ""
    )
    if item["passed_over"]:
        line += (
            f" (the nearest of {len(item['passed_over']) + 1} recordings that normalise alike;"
            f" not {', '.join(item['passed_over'])})"
        )
    return line
