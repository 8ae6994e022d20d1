"""Rewriting a JSON file with some of its values changed, and nothing else (``cassette scrub``).

orjson, which reads every file, reads an integer beyond 64 bits as a float and writes ``1E+2``
back as ``100.0``: a file parsed and written again loses what it held. So a rewrite does not
write the parsed value. It parses the file again without loss (``exact``: Python's json reader,
every number kept as its own text in an ``orjson.Fragment``), finds what the change changed by
comparing the value before and after it (``before``, ``after``: as orjson parses them, where
numbers the change did not touch compare equal whatever they lost), puts the new values in
those places of the exact copy, and writes that.

Every other value keeps exactly what it was: numbers as their text
(``123456789012345678901234567890``, ``1E+2``, ``-0.0``), strings (an escape such as a surrogate
pair ``\\ud83d\\ude00`` is written as the character it stands for: the same string), the order
of keys, fields this reader does not know.
An object with a key given twice is refused (``NotExact``): JSON readers differ on which of its
values counts (orjson keeps the last), so no rewrite could keep "the" value.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import orjson


class NotExact(ValueError):
    """Why a file cannot be rewritten changing only what was meant."""


def exact(raw: bytes) -> Any:
    """The file's JSON with every number kept as its own text; ``NotExact`` for a key given
    twice in one object, or a document nested deeper than Python parses."""
    try:
        return json.loads(
            raw.decode("utf-8"),
            parse_int=_number,
            parse_float=_number,
            parse_constant=_refused,
            object_pairs_hook=_object,
        )
    except RecursionError:
        raise NotExact("it is nested deeper than it can be rewritten") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NotExact(f"it is not valid JSON ({e})") from None


def _number(text: str) -> orjson.Fragment:
    return orjson.Fragment(text.encode())


def _refused(text: str) -> Any:
    raise NotExact(f"{text} is not JSON")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        twice = next(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
        raise NotExact(f"the key {twice!r} appears twice in one object")
    return out


def rewrite(raw: bytes, before: Any, after: Any) -> bytes:
    """``raw`` (a file whose value is ``before``) with what differs in ``after`` changed, and
    nothing else; written indented by two spaces, as the writers write. ``NotExact`` when the
    file cannot be so rewritten (a key given twice; a change at a place the file lays out
    otherwise than ``before``)."""
    try:
        changed = _apply(exact(raw), before, after, "")
    except RecursionError:
        raise NotExact("it is nested deeper than it can be rewritten") from None
    return orjson.dumps(changed, option=orjson.OPT_INDENT_2) + b"\n"


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _apply(kept: Any, before: Any, after: Any, where: str) -> Any:
    """``kept`` (the exact copy of ``before``) with ``after``'s differences."""
    if _same(before, after):
        return kept
    if isinstance(before, dict) and isinstance(after, dict):
        if not isinstance(kept, dict) or len(before) != len(after):
            raise NotExact(f"the file is laid out otherwise at {where or 'its top'}")
        out = dict(kept)
        renamed: dict[str, str] = {}
        for (old_key, old), (new_key, new) in zip(before.items(), after.items(), strict=True):
            if _same(old, new) and old_key == new_key:
                continue
            if old_key not in kept:
                raise NotExact(f"the file has no {where}.{old_key}")
            out[old_key] = _apply(kept[old_key], old, new, f"{where}.{old_key}")
            if new_key != old_key:
                renamed[old_key] = new_key
        return {renamed.get(k, k): v for k, v in out.items()} if renamed else out
    if isinstance(before, list) and isinstance(after, list):
        if not isinstance(kept, list) or not len(kept) == len(before) == len(after):
            raise NotExact(f"the file is laid out otherwise at {where or 'its top'}")
        return [
            k if _same(old, new) else _apply(k, old, new, f"{where}[{i}]")
            for i, (k, old, new) in enumerate(zip(kept, before, after, strict=True))
        ]
    return after  # a value the change replaced: written as it is now
