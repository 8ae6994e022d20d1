"""How old a recording is: ages written as ``30d`` or ``12h``, and the ``recorded_at`` of its
responses. One definition for the proxy (``cassette_max_age``: warn, fail or refresh) and the
``cassette ls --older-than`` and ``cassette stale`` commands.

A recording's date is its newest response's ``recorded_at`` (a cassette is rewritten whole when
it is recorded again, so its responses share one session). Recordings without it (llama-stack's
files, and cassettes imported from them) have no age: they are never stale.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from proxy_addon.model import Recording

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*")
# The thresholds ``cassette stale`` counts recordings against.
THRESHOLDS = ("7d", "30d", "90d", "365d")


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w``, ``45s`` as a duration; ``ValueError`` otherwise."""
    m = _AGE.fullmatch(text)
    if m is None:
        raise ValueError(
            f"{text!r} is not an age: write a number and a unit, s, m, h, d or w (e.g. 30d, 12h)"
        )
    try:
        return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    except OverflowError:
        raise ValueError(f"{text!r} is longer than any age a recording can have") from None


def parse_time(text: str | None) -> datetime | None:
    """A ``recorded_at`` as an aware datetime (a naive one is taken as UTC); None when absent
    or not an ISO 8601 time."""
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def recorded(rec: Recording) -> datetime | None:
    """When the recording was made: its newest response's ``recorded_at``, or None."""
    times = [t for t in (parse_time(r.recorded_at) for r in rec.responses) if t is not None]
    return max(times, default=None)


def now() -> datetime:
    return datetime.now(UTC)


def describe(delta: timedelta) -> str:
    """An age as people say it: ``40 days``, ``5 hours``, ``3 minutes``."""
    seconds = max(0, int(delta.total_seconds()))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} seconds"


@dataclass
class AgeLimit:
    """Which recordings are older than ``limit``, each judged once (keyed by the caller: the
    proxy keys by index entry, which a re-recording replaces)."""

    limit: timedelta
    clock: Callable[[], datetime] = now
    _dates: dict[Hashable, datetime | None] = field(default_factory=dict)

    def age_over(self, key: Hashable, rec: Callable[[], Recording]) -> timedelta | None:
        """The recording's age when it is over the limit, else None (also when it has no
        date). ``rec`` is called only the first time a key is seen."""
        if key not in self._dates:
            self._dates[key] = recorded(rec())
        when = self._dates[key]
        if when is None:
            return None
        age = self.clock() - when
        return age if age > self.limit else None
