"""Text as a person or an XML reader is shown it. A request's path is decoded for its key
(``%1B`` becomes ESC), and a test id or a model name can hold any character: written raw, a
control character is a terminal escape in a log and makes a JUnit file invalid XML.
``printable`` writes each such character as a visible escape, as Python writes it in a string
(``\\x1b``, ``\\x00``, ``\\x7f``); everything else, line breaks and tabs among it, is kept."""

from __future__ import annotations

import re

# C0 controls but tab and line feed, DEL, C1 controls, and the code points XML 1.0 allows
# nowhere (lone surrogates, U+FFFE, U+FFFF)
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def printable(text: str) -> str:
    """``text`` with each control character (but tab and line feed) and each code point XML
    does not allow escaped visibly; ``text`` itself when it holds none."""
    if _UNPRINTABLE.search(text) is None:
        return text
    return _UNPRINTABLE.sub(_escaped, text)


def _escaped(found: re.Match[str]) -> str:
    code = ord(found[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
