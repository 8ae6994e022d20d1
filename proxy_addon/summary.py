"""What a run of the proxy did: its modes, its counters, and the one summary everybody prints.

The addon counts; when it stops it logs ``line()`` and writes ``Summary`` as JSON to
``cassette_summary``; ``cassette run`` and the pytest plugin read that file back (and the plugin
combines its xdist workers'), so the wording and the schema live here only.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import orjson

MODES = ("replay", "record", "auto", "passthrough", "refresh")
# The modes that answer from recordings already there: their directory must exist.
NEEDS_RECORDINGS = ("replay", "refresh")

# The counts each mode's summary always shows; any other is shown when it is not 0.
CORE: dict[str, tuple[str, ...]] = {
    "replay": ("hits", "misses", "unused"),
    "refresh": ("hits", "recorded", "misses", "unused"),
    "auto": ("hits", "recorded", "unused"),
    "record": ("recorded",),
    "passthrough": ("requests",),
}
_ALL_CORE = ("hits", "recorded", "misses", "unused")  # a summary that names no mode

# What a run that saw no request at all most likely means.
NOTHING_REACHED = (
    "no request reached the proxy: does the client read HTTPS_PROXY or a base-URL "
    "variable such as OPENAI_BASE_URL? (a client built with an explicit base URL "
    "or HTTP client needs pointing at the proxy)"
)


# The line a proxy prints when indexing its folder takes more than a second; the runner passes it
# on to the user while it waits for the proxy (``runner/process.py``).
INDEXING = "cassette: indexing"


def nothing_reached_fails(mode: str, environ: Mapping[str, str]) -> bool:
    """Whether a run that no request reached is an error, not a warning: in replay mode on CI
    (``CI=true``), where a green run that tested nothing is the failure to prevent."""
    return mode == "replay" and environ.get("CI", "").lower() in ("true", "1")


@dataclass
class Summary:
    """A run's counts, as written to ``cassette_summary``."""

    mode: str = ""  # the proxy's mode: which counts mean something (``CORE``)
    requests: int = 0  # requests that reached the proxy (the control channel's not counted)
    hits: int = 0
    recorded: int = 0
    misses: int = 0
    abandoned: int = 0  # responses not saved: the client left before they were complete
    upstream_failed: int = 0  # not saved: the upstream refused, reset or failed before an answer
    write_errors: int = 0  # recordings that could not be written (disk full, ...)
    internal_errors: int = 0  # faults inside the proxy's hooks (each answered or logged)
    refused_connections: int = 0  # upstream connections refused in replay mode
    # hits on recordings older than cassette_max_age: answered (cassette_stale=warn) or refused
    # with an error (cassette_stale=fail)
    stale: int = 0
    stale_refused: int = 0
    # requests not under test (``cassette_incidental``): answered without a recording in a
    # replay, forwarded in the other modes, never recorded
    incidental: int = 0
    recordings: int = 0  # recordings in the directory when the proxy stopped
    created: list[str] = field(default_factory=list)  # files this proxy's recordings created
    unused: list[str] = field(default_factory=list)  # files no request used
    miss_messages: list[str] = field(default_factory=list)
    bad_files: list[dict[str, str]] = field(default_factory=list)  # {"path", "reason"}
    # hits answered from a recording made for another host: {"asked", "recorded_for", "file"}
    other_host: list[dict[str, str]] = field(default_factory=list)
    # hits that matched only after cassette_normalize: counted, and each with the values it
    # replaced, {"request", "file", "replaced": [{"path", "live", "recorded", "form"}],
    # "passed_over": [files that normalise alike, further from the request]}
    normalised: int = 0
    normalised_hits: list[dict[str, Any]] = field(default_factory=list)
    # tokens the recorded usage of the answers says (reports/tokens.py), served from cassettes
    input_tokens_served: int = 0
    output_tokens_served: int = 0
    # each request, up to REQUEST_LOG_LIMIT of them: the reports' records (reports/record.py)
    request_log: list[dict[str, Any]] = field(default_factory=list)
    # how the directory was indexed at start: seconds, files, from_cache (answered by the saved
    # index, unread), read, cache (its file), cache_state (``store/index_cache.py``)
    indexing: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """``cassette summary: ...``: the counts that mean something in the mode (``CORE``), in
        its order; then hits, recorded or misses where they are not 0 (in no mode they do not
        mean something), and whatever else happened. Unused recordings only where recordings
        are looked up; requests only in passthrough, where nothing else is counted."""
        counts = {
            "hits": (self.hits, f"{self.hits} hits"),
            "recorded": (self.recorded, f"{self.recorded} recorded"),
            "misses": (self.misses, f"{self.misses} misses"),
            "unused": (
                len(self.unused),
                f"{len(self.unused)} unused recordings (of {self.recordings})",
            ),
            "requests": (self.requests, f"{self.requests} requests passed through"),
        }
        core = CORE.get(self.mode, _ALL_CORE)
        extras = [
            (self.abandoned, "not saved (the client left before the end)"),
            (self.upstream_failed, "not saved (the upstream failed or refused)"),
            (self.write_errors, "could not be written"),
            (self.internal_errors, "internal errors"),
            (self.refused_connections, "upstream connections refused (replay)"),
            (self.stale, "answered from stale recordings (older than cassette_max_age)"),
            (self.stale_refused, "refused as stale (older than cassette_max_age)"),
            (len(self.other_host), "answered from another host's recording"),
            (self.normalised, "answered after normalising"),
            (self.incidental, "incidental requests (cassette_incidental; never recorded)"),
        ]
        shown = [counts[name][1] for name in core]
        shown += [
            text
            for name, (n, text) in counts.items()
            if n and name not in core and name in ("hits", "recorded", "misses")
        ]
        shown += [f"{n} {what}" for n, what in extras if n]
        return "cassette summary: " + ", ".join(shown)

    def failure(self, mode: str, environ: Mapping[str, str]) -> str | None:
        """Why a run whose command (or tests) passed fails all the same, in one line; None
        when it does not."""
        reasons = [
            f"{n} {what}"
            for n, what in (
                (self.misses, "replay misses"),
                (self.internal_errors, "internal errors in the proxy"),
                (self.refused_connections, "upstream connections refused"),
                (self.stale_refused, "stale recordings refused (cassette_stale=fail)"),
            )
            if n
        ]
        if self.reached_nothing and nothing_reached_fails(mode, environ):
            reasons.append("no request reached the proxy (replay mode with CI=true)")
        return "; ".join(reasons) if reasons else None

    @property
    def reached_nothing(self) -> bool:
        """Whether no client reached the proxy at all: no request, and no connection it refused
        (a refused tunnel is a client that did reach it, and is reported as such)."""
        return self.requests == 0 and self.refused_connections == 0

    @property
    def failed(self) -> bool:
        """Whether the run went wrong in a way a green test run must not hide: a replay miss,
        a fault inside the proxy, a connection the replay refused, or a stale recording refused
        (``cassette_stale=fail``)."""
        return self.failure("", {}) is not None

    def miss_report(self) -> list[str]:
        """The miss messages to show, each once, in the order they came, with how often it came
        when more than once: a framework's own retries (LiteLLM's ``num_retries``, a CrewAI
        agent's) send the same request again whatever the answer."""
        times = Counter(self.miss_messages)
        return [m if times[m] == 1 else f"{m} ({times[m]} times)" for m in times]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Summary:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    @classmethod
    def read(cls, path: Path) -> Summary | None:
        """The summary a proxy wrote when it stopped, or None if it wrote none."""
        try:
            return cls.from_json(orjson.loads(path.read_bytes()))
        except (OSError, orjson.JSONDecodeError, TypeError):
            return None

    @classmethod
    def combine(cls, parts: list[Summary]) -> Summary:
        """Several proxies over one directory (xdist workers): counts add up; a recording is
        unused only if no proxy used it; the recordings are those the first proxy to start
        found, plus every file any of them created, each once (as one proxy would count)."""
        unused = set(parts[0].unused)
        for part in parts[1:]:
            unused &= set(part.unused)
        created = sorted({path for part in parts for path in part.created})
        before = min(p.recordings - len(p.created) for p in parts)
        total = cls(
            mode=parts[0].mode,
            recordings=before + len(created),
            created=created,
            unused=sorted(unused),
        )
        counts = [f.name for f in fields(cls) if f.type == "int" and f.name != "recordings"]
        for part in parts:
            for name in counts:  # every counter, one added later included
                setattr(total, name, getattr(total, name) + getattr(part, name))
            total.miss_messages += part.miss_messages
            total.other_host += part.other_host
            total.normalised_hits += part.normalised_hits
            total.request_log += part.request_log
        total.bad_files = parts[0].bad_files
        total.indexing = parts[0].indexing  # each worker indexed the same directory
        return total


_FIELDS = frozenset(f.name for f in fields(Summary))
MAX_NOTES = 1000  # miss messages (other-host, normalised hits) a summary keeps; counts go on
REQUEST_LOG_LIMIT = 10_000  # requests the report lists; counts go on


class Counters:
    """The counts of a running proxy. The event loop and the writer thread both count, so
    every change goes through ``add`` under a lock. Kept by name in dicts (a replayed request
    adds to four of them) and made into a ``Summary`` when one is asked for (``snapshot``),
    which refuses a name that is not one of its fields."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        # miss_messages, other_host, normalised_hits, request_log
        self._notes: dict[str, list[Any]] = {}

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + n

    def tally(self, counts: Mapping[str, int], name: str, item: Any, limit: int) -> None:
        """Several counts and one note at once (``add``, ``note``): a replayed request's, under
        one acquisition of the lock."""
        with self._lock:
            kept = self._counts
            for counter, n in counts.items():
                kept[counter] = kept.get(counter, 0) + n
            self._note(name, item, limit)

    def note(self, name: str, item: Any, limit: int = MAX_NOTES) -> None:
        """Append to one of the lists (miss_messages, other_host, normalised_hits, request_log),
        up to ``limit`` items: a proxy left running keeps counting, not remembering each one."""
        with self._lock:
            self._note(name, item, limit)

    def _note(self, name: str, item: Any, limit: int) -> None:
        kept = self._notes.setdefault(name, [])
        if len(kept) < limit:
            kept.append(item)

    def snapshot(
        self,
        mode: str,
        recordings: int,
        created: list[str],
        unused: list[str],
        bad_files: list[dict[str, str]],
        indexing: dict[str, Any] | None = None,
    ) -> Summary:
        summary = Summary(mode, recordings=recordings, created=created, unused=unused)
        summary.bad_files, summary.indexing = bad_files, indexing or {}
        with self._lock:
            counted: dict[str, Any] = {
                **self._counts,
                **{name: list(items) for name, items in self._notes.items()},
            }
        unknown = counted.keys() - _FIELDS
        if unknown:
            raise AttributeError(f"Summary has no field {', '.join(sorted(unknown))}")
        for name, value in counted.items():
            setattr(summary, name, value)
        return summary
