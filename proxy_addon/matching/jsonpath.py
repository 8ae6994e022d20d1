"""Dotted JSON paths: ``user``, ``metadata.trace_id``, ``messages[0].content``, ``messages.*.name``.

Parsed once from the options (``cassette_ignore``, ``cassette_redact_fields``), then used to
leave a field out of matching, to find a field to redact, and to name where a secret was found.
And the copy-on-write walk over a parsed value's leaves that matching's number rule and the
normalisers share.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

Path = tuple[str | int, ...]

_SEGMENT = re.compile(r"[^.\[\]]+|\[(\d+|\*)\]")
_PATH = re.compile(r"(?:[^.\[\]]+|\[(?:\d+|\*)\])(?:\.[^.\[\]]+|\[(?:\d+|\*)\])*")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_$-]+")


def parse_path(dotted: str) -> Path:
    """Split a dotted JSON path into keys (str) and list indices (int); ``*`` matches any.

    The whole text must parse: ``messages[-1]`` or ``a[x]`` is refused rather than read as a
    key nobody has, which would silently ignore nothing."""
    if not _PATH.fullmatch(dotted):
        raise ValueError(
            f"{dotted!r} is not a JSON path: write keys separated by dots, and "
            "[n] or [*] for list items, e.g. messages[0].content or messages.*.name"
        )
    segments: list[str | int] = []
    for m in _SEGMENT.finditer(dotted):
        if m.group(1) is not None:
            segments.append("*" if m.group(1) == "*" else int(m.group(1)))
        else:
            segments.append(m.group(0))
    return tuple(segments)


def is_path(text: str) -> bool:
    """Whether an option's item is a path (``a.b``, ``a[0]``) rather than a bare field name."""
    return "." in text or "[" in text


def drop_path(value: Any, path: Sequence[str | int]) -> Any:
    """A copy of ``value`` without the field at ``path`` (unchanged parts are shared)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        if head == "*":
            keys = list(value)
        elif isinstance(head, str) and head in value:
            keys = [head]
        else:
            return value
        out = dict(value)
        for k in keys:
            if rest:
                out[k] = drop_path(value[k], rest)
            else:
                del out[k]
        return out
    if isinstance(value, list):
        if head == "*":
            indices = range(len(value))
        elif isinstance(head, int) and 0 <= head < len(value):
            indices = range(head, head + 1)
        elif isinstance(head, str) and head.isdigit() and int(head) < len(value):
            indices = range(int(head), int(head) + 1)
        else:
            return value
        if not rest:
            return [v for i, v in enumerate(value) if i not in indices]
        out_list = list(value)
        for i in indices:
            out_list[i] = drop_path(value[i], rest)
        return out_list
    return value


def matches(pattern: Path, path: Sequence[str | int]) -> bool:
    """Whether a concrete path (keys and indices, from the root) is the one ``pattern`` names."""
    if len(pattern) != len(path):
        return False
    for want, got in zip(pattern, path):
        if want == "*" or want == got:
            continue
        if isinstance(got, int) and isinstance(want, str) and want.isdigit() and int(want) == got:
            continue
        return False
    return True


def format_path(segments: Sequence[str | int]) -> str:
    """``("responses", 0, "body", "a b")`` -> ``responses[0].body["a b"]``: where a finding is."""
    out = ""
    for seg in segments:
        if isinstance(seg, int):
            out += f"[{seg}]"
        elif _PLAIN_KEY.fullmatch(seg):
            out += f".{seg}" if out else seg
        else:
            out += "[" + json.dumps(seg, ensure_ascii=False) + "]"
    return out


def map_leaves(value: Any, leaf: Callable[[Any, str | None], Any], key: str | None = None) -> Any:
    """``value`` (parsed JSON) with ``leaf(item, key)`` applied to every value that is not an
    object or a list, at any depth, ``key`` being the object key that holds it (a list's items
    share their list's key; None at the top); object keys are left as they are. Unchanged parts
    are shared, not copied, so a body nothing applies to costs one walk and no allocation."""
    if isinstance(value, dict):
        changed: dict[str, Any] | None = None
        for k, v in value.items():
            new = map_leaves(v, leaf, k)
            if new is not v:
                changed = changed if changed is not None else dict(value)
                changed[k] = new
        return changed if changed is not None else value
    if isinstance(value, list):
        items: list[Any] | None = None
        for i, v in enumerate(value):
            new = map_leaves(v, leaf, key)
            if new is not v:
                items = items if items is not None else list(value)
                items[i] = new
        return items if items is not None else value
    return leaf(value, key)
