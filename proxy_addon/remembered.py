"""A pure function's answers for short texts, remembered with a bound. A replaying run asks the
same few questions of every request (is this URL path free of secrets, is this request line
incidental); the answer is the same each time, and a lookup costs less than the scan. Long
texts are not kept (each would hold its size in memory), and at most ``MOST`` answers are:
the least recently asked goes first."""

from __future__ import annotations

import functools
from collections.abc import Callable

MOST = 256  # answers kept per function
LONGEST = 512  # characters of the longest text whose answer is kept


def remembered[Answer](answer: Callable[[str], Answer]) -> Callable[[str], Answer]:
    """``answer``, its answers for texts of at most ``LONGEST`` characters kept (``MOST`` at
    most). ``answer`` must depend on its text alone: for an object's method, make one per
    object whose state it reads."""
    kept = functools.lru_cache(maxsize=MOST)(answer)

    def asked(text: str) -> Answer:
        return kept(text) if len(text) <= LONGEST else answer(text)

    return asked
