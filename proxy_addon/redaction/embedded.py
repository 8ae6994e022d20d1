"""JSON inside a string: a tool call's ``arguments``, a tool's result, a WebSocket message's
text field hide their names from a walk of the document they sit in. ``embedded_secrets``
finds the strings under secret names in such a string (at any depth, and in JSON strings inside
it), and ``replace_tokens`` rewrites the string with those JSON strings replaced, keeping its
spacing and order; ``token_spans`` says where they are, for text spelled across events
(``spelled``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import orjson

from proxy_addon.redaction.secret_rules import REDACTED, Secrets

_STRING_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"(\s*:)?', re.DOTALL)


def embedded_secrets(text: str, secrets: Secrets) -> list[tuple[str, str]]:
    """(name, string) for each string under a secret name in ``text`` when it is a JSON object
    or array (at any depth, and in JSON strings inside it): empty for any other text."""
    if text.lstrip()[:1] not in ("{", "[") or not secrets.might_hold(text):
        return []
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return []
    found: list[tuple[str, str]] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for k, v in item.items():
                if secrets.is_secret_field(k, v, None):
                    if v and v != REDACTED:
                        found.append((k, v))
                else:
                    stack.append(v)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and item.lstrip()[:1] in ("{", "["):
            found += embedded_secrets(item, secrets)
    return found


def token_spans(text: str, values: Sequence[str]) -> list[tuple[int, int, str]]:
    """(start, end, value) where a JSON string (not a key) of ``text`` decodes to one of
    ``values``, inside its quotes."""
    wanted = set(values)
    out = []
    for m in _STRING_TOKEN.finditer(text):
        if m.group(1) is not None:  # a key
            continue
        try:
            decoded = orjson.loads(m.group(0))
        except orjson.JSONDecodeError:
            continue
        if decoded in wanted:
            out.append((m.start() + 1, m.end() - 1, decoded))
    return out


def replace_tokens(text: str, values: Sequence[str]) -> str:
    """``text`` (JSON) with every JSON string that is one of ``values`` replaced, in JSON
    strings inside it too (that string then written anew)."""
    wanted = set(values)

    def token(m: re.Match[str]) -> str:
        if m.group(1) is not None:  # a key
            return m.group(0)
        try:
            decoded = orjson.loads(m.group(0))
        except orjson.JSONDecodeError:
            return m.group(0)
        if decoded in wanted:
            return f'"{REDACTED}"'
        if isinstance(decoded, str) and decoded.lstrip()[:1] in ("{", "["):
            inner = replace_tokens(decoded, values)
            return orjson.dumps(inner).decode() if inner != decoded else m.group(0)
        return m.group(0)

    return _STRING_TOKEN.sub(token, text)
