"""The cassette directory: what is on disk (``index``), how a request is answered from it
(``CassetteStore.lookup``), and how new recordings are written (``recorder``, ``writer``).

Files in the order a request's way passes them: ``layout`` (where files live), ``index`` (what
is there), ``chooser`` (which of several recordings), ``recorder`` and ``writer`` (writing).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from proxy_addon import formats
from proxy_addon.matching import hosts
from proxy_addon.matching.canonical import DEFAULT_RULES, CanonicalRequest, Rules
from proxy_addon.model import Body, CassetteError, RecordedResponse
from proxy_addon.store.cache import BUDGET_BYTES
from proxy_addon.store.chooser import Chooser, LookupContext
from proxy_addon.store.entries import Entry
from proxy_addon.store.index import Found, Index
from proxy_addon.store.recorder import Recorder
from proxy_addon.store.writer import Writer, atomic_write

__all__ = ["CassetteStore", "Hit", "LookupContext"]


@dataclass(slots=True)
class Hit:
    entry: Entry
    response: RecordedResponse
    index: int  # which of the recorded responses (0-based)
    other_host: str | None = None  # answered from a recording made for this other host
    normalised: bool = False  # it matched only once both sides were normalised
    # recordings that normalise alike, passed over for this one's nearer original
    passed_over: tuple[Entry, ...] = ()


class CassetteStore:
    """A cassette directory, answering requests in recorded order and taking new recordings."""

    def __init__(
        self,
        root: Path,
        rules: Rules = DEFAULT_RULES,
        max_file_bytes: int = formats.MAX_FILE_BYTES,
        writer: Writer = atomic_write,
        validate: bool = False,
        cache_bytes: int = BUDGET_BYTES,
        cache_folder: Path | None = None,
        processes: int | None = None,
    ) -> None:
        self.root = Path(root)
        self.index = Index(
            self.root, rules, max_file_bytes, validate, cache_bytes, cache_folder, processes
        )
        self.recorder = Recorder(self.index, writer)
        self.chooser = Chooser(self.index)
        self._served: dict[str, int] = defaultdict(int)
        self._merged: dict[str, RecordedResponse] = {}  # model lists of one host, united
        self._ambiguous = False

    def load(self) -> None:
        self.index.load()
        self._ambiguous = self.index.entries.ambiguous()

    def __len__(self) -> int:
        return len(self.index)

    def lookup(self, canon: CanonicalRequest, ctx: LookupContext | None = None) -> Hit | None:
        """The next response for this request: the N-th call gets the N-th recorded response,
        and past the end the last one repeats. Where several files recorded this request, the
        one that keeps the conversation coherent is chosen (``chooser``). A file whose
        responses cannot be read is dropped from the index, and the others are tried."""
        while True:
            try:
                return self._lookup(canon, ctx or LookupContext())
            except CassetteError as e:
                broken = self.index.entries.made_for(e.path) if e.path else None
                if broken is None:
                    raise
                self.index.drop(broken, e)

    def _lookup(self, canon: CanonicalRequest, ctx: LookupContext) -> Hit | None:
        found = self.index.find(canon, ctx.test_dir)
        variants = self.chooser.variants(canon, ctx.test_dir)
        if found is None and variants:
            found = self.chooser.deepest(variants)
        if found is None:
            return None
        entries = found.entries
        if (
            len(entries) > 1
            and found.other_host is None
            and hosts.is_model_list(canon.method, canon.path)
        ):
            return self._model_list(found)
        entry = entries[0] if len(entries) == 1 else self.chooser.choose(entries, canon, ctx)
        n = self._served[found.counter]
        self._served[found.counter] = n + 1
        entry.uses += 1
        responses = entry.recording.responses
        index = min(n, len(responses) - 1)
        if self._ambiguous:
            self.chooser.remember(entry, ctx, entries + [e for f in variants for e in f.entries])
        return Hit(
            entry,
            responses[index],
            index,
            entry.origin if found.other_host is not None else None,
            found.normalised,
            found.passed_over,
        )

    def _model_list(self, found: Found) -> Hit:
        """One host's model list recorded several times (each time with the models it had
        then): answered with all of them, built once."""
        merged = self._merged.get(found.counter)
        if merged is None:
            answers = [e.recording.responses[-1] for e in found.entries]
            bodies = [r.body.value for r in answers if r.body is not None and r.body.kind == "json"]
            first = answers[0]
            merged = RecordedResponse(
                first.status,
                first.headers,
                recorded_at=first.recorded_at,
                body=Body("json", hosts.union_of_model_lists(bodies)) if bodies else first.body,
            )
            self._merged[found.counter] = merged
        for e in found.entries:
            e.uses += 1
        return Hit(found.entries[0], merged, 0)
