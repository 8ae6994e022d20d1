"""The tests' own reading of what a cassette holds: plain JSON, not the proxy's readers, so a
check of the files never grades the code with its own functions."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def spelled_texts(doc: dict[str, Any]) -> list[str]:
    """The text each JSON path of a file's stream events spells, joined across the events
    (``choices[0].delta.content``, ``delta.text``, ...): a secret split over several events is
    whole here."""
    joined: dict[tuple[Any, ...], str] = {}

    def walk(value: Any, path: tuple[Any, ...]) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, (*path, k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, (*path, i))
        elif isinstance(value, str):
            joined[path] = joined.get(path, "") + value

    for n, response in enumerate(doc["responses"]):
        for event in (response.get("stream") or {}).get("events", []):
            walk(event.get("data"), (n,))
    return list(joined.values())


def with_replaced(value: Any, forms: Iterable[str], placeholder: str = "<redacted>") -> Any:
    """``value`` (JSON) with every string's ``forms`` replaced, the longest first (a Basic
    credential before its parts): what a recorded answer must be in replay, each secret
    replaced and nothing else."""
    longest_first = sorted(set(forms), key=len, reverse=True)

    def replaced(v: Any) -> Any:
        if isinstance(v, str):
            for form in longest_first:
                v = v.replace(form, placeholder)
            return v
        if isinstance(v, list):
            return [replaced(item) for item in v]
        if isinstance(v, dict):
            return {k: replaced(item) for k, item in v.items()}
        return v

    return replaced(value)
