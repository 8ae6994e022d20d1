"""Reading a cassette file in whichever format it is in: ours (``formats.cassette``) or
llama-stack's test-recorder files (``formats.llama_stack``), both into ``model.Recording``."""

from __future__ import annotations

from pathlib import Path

import orjson

from proxy_addon.formats import cassette, llama_stack
from proxy_addon.model import CassetteError, Recording


def loads(raw: bytes, path: Path | str | None = None) -> Recording:
    """Parse a file's bytes in either format; raise ``CassetteError`` naming the file."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise CassetteError(path, f"not valid JSON ({e})") from None
    if llama_stack.is_llama_stack(doc):
        return llama_stack.read(doc, path)
    if isinstance(doc, dict) and not cassette.is_ours(doc):
        raise CassetteError(path, "not a cassette: no 'version' field, and not a llama-stack "
                                  "recording (no 'request' and 'response' objects)")
    return cassette.from_dict(doc, path)


def load(path: Path) -> Recording:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CassetteError(path, f"cannot read ({e.strerror})") from None
    return loads(raw, path)
