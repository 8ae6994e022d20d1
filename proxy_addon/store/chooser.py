"""Choosing among several recordings of one request, so a replayed conversation stays coherent.

llama-stack's corpus holds the same first turn recorded by several tests, each with its own
answer; a follow-up turn embeds the answer its test got. Only consulted when a request has more
than one recording (our own recorder writes one file per request), so the common path never
pays for it.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections import defaultdict
from dataclasses import dataclass

from proxy_addon.bodies.reassemble import Transcript, reassemble
from proxy_addon.matching.canonical import CanonicalRequest
from proxy_addon.model import CassetteError
from proxy_addon.store.conversation import (
    assistant_messages,
    message_signatures,
    transcript_signature,
    write_answer,
)
from proxy_addon.store.entries import Entry
from proxy_addon.store.index import Found, Index

MAX_VARIANTS = 32  # combinations of other answers tried for one request


@dataclass(frozen=True, slots=True)
class LookupContext:
    """Who is asking: the client connection and, when known, the test being replayed and the
    test's own cassette directory."""

    connection: str | None = None
    test_id: str | None = None
    test_dir: str | None = None


class Chooser:
    """What was served so far, and the choice it informs."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self._transcripts: dict[Entry, Transcript] = {}
        self._answers: dict[Entry, str | None] = {}
        self._followers: dict[tuple[str, str], dict[str, list[Entry]]] = {}
        self._depths: dict[Entry, int] = {}
        self._served_answers: dict[str, str] = {}  # answer signature -> test that got it
        # served answer -> the other answers recorded for the same request
        self._alternatives: dict[str, list[Transcript]] = {}
        self._connection_tests: dict[str, list[str]] = defaultdict(list)

    def transcript(self, entry: Entry) -> Transcript:
        """The entry's first answer as the user saw it, reassembled once."""
        if entry not in self._transcripts:
            self._transcripts[entry] = reassemble(entry.recording.responses[0])
        return self._transcripts[entry]

    def answer(self, entry: Entry) -> str | None:
        if entry not in self._answers:
            self._answers[entry] = transcript_signature(self.transcript(entry))
        return self._answers[entry]

    def choose(self, entries: list[Entry], canon: CanonicalRequest, ctx: LookupContext) -> Entry:
        """Among recordings of the same request, prefer, in this order: the test named by the
        client; the test whose answers this conversation already carries; the answer followed
        by the longest recorded conversation (a client whose own conversation is shorter still
        finds its next turn among the ``variants``); a test already served on this connection.
        """
        conversation = {
            self._served_answers[s]
            for s in message_signatures(canon.body)
            if s in self._served_answers
        }
        connection = set(self._connection_tests.get(ctx.connection or "", ()))

        def score(e: Entry) -> tuple[bool, bool, int, bool]:
            tid = e.test_id
            return (
                ctx.test_id is not None and tid == ctx.test_id,
                tid in conversation,
                self.depth(e),
                tid in connection,
            )

        return max(entries, key=score)

    def variants(self, canon: CanonicalRequest, test_dir: str | None) -> list[Found]:
        """This request as other recorded conversations made it: with each answer chosen
        earlier among several replaced by one of the others.

        A first turn recorded by several tests gets one of their answers; the client's next
        turn embeds that answer, while its own test recorded that turn after another one. Any
        of them was right for the first turn, so the next turn as recorded after another answer
        is a coherent reply. At most ``MAX_VARIANTS`` combinations are tried.
        """
        if not self._alternatives:
            return []
        slots = [
            (index, self._alternatives[sig])
            for index, sig in assistant_messages(canon.body)
            if sig is not None and sig in self._alternatives
        ]
        fits: list[Found] = []
        for combination in itertools.islice(
            itertools.product(*(alts for _, alts in slots)), MAX_VARIANTS if slots else 0
        ):
            body = copy.deepcopy(canon.body)
            for (index, _), answer in zip(slots, combination, strict=True):
                write_answer(body, index, answer)
            # (the original before any normaliser is unknown for a body made up here)
            variant = dataclasses.replace(canon, body=body, exact=None)
            found = self.index.find(variant, test_dir)
            if found is not None:
                fits.append(found)
        return fits

    def deepest(self, found: list[Found]) -> Found:
        return max(found, key=lambda f: max(self.depth(e) for e in f.entries))

    def _followers_of(self, entry: Entry) -> dict[str, list[Entry]]:
        """Answer signature -> the recordings of the entry's endpoint whose request carries it
        as its last answer. Built once per endpoint from the requests alone (a follow-up turn
        goes to the endpoint its first turn went to)."""
        endpoint = (entry.method, entry.endpoint)
        followers = self._followers.get(endpoint)
        if followers is None:
            followers = self._followers[endpoint] = defaultdict(list)
            for e in self.index.entries.of_endpoint(*endpoint):
                try:
                    request = e.request
                except CassetteError:  # unreadable now: it follows nothing
                    continue
                sigs = message_signatures(request.body.value) if request.body else []
                if sigs:
                    followers[sigs[-1]].append(e)
        return followers

    def depth(self, entry: Entry, _seen: frozenset[int] = frozenset()) -> int:
        """How many recorded turns follow this recording's answer (0: none)."""
        if entry in self._depths:
            return self._depths[entry]
        sig = self.answer(entry)
        followers = self._followers_of(entry).get(sig, []) if sig is not None else []
        seen = _seen | {id(entry)}
        result = 0
        for follower in followers:
            if id(follower) in seen:
                continue
            try:
                result = max(result, 1 + self.depth(follower, seen))
            except CassetteError:  # its answer cannot be read: it follows on from nothing
                continue  # (dropped from the index when it is itself asked for)
        self._depths[entry] = result
        return result

    def remember(self, entry: Entry, ctx: LookupContext, entries: list[Entry]) -> None:
        """Note what was served: its answer's alternatives (the answers of the other
        recordings of this turn), and its test for the conversation and the connection."""
        sig = self.answer(entry)
        others = {self.answer(e): e for e in entries if self.answer(e) not in (None, sig)}
        if sig is not None and others:
            self._alternatives[sig] = [self.transcript(e) for e in others.values()]
        tid = entry.test_id
        if tid is None:
            return
        if sig is not None:
            self._served_answers[sig] = tid
        if ctx.connection is not None:
            self._connection_tests[ctx.connection].append(tid)
