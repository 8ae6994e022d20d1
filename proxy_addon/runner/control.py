"""The control channel: how a test runner tells the proxy which test runs.

Requests to the reserved host ``cassette.control`` are answered by the proxy itself, never
forwarded. The pytest plugin uses them:

- ``POST /test`` with ``{"test_id": ..., "cassette": ...}`` (``{}`` after the test): the test
  being run, and the name of its own cassette;
- ``GET /misses``: the miss messages since the test began;
- ``GET /status``: whether the addon is configured and started, its mode, directory and
  interface (``mitm/state.State.status``): the handshake ``runner/process.start_proxy`` makes
  before a command or a test session may use the proxy.

Any client may instead name its test per request with the ``x-cassette-test-id`` header.

A test's names reach the files (its ``test_id``, its directory), so what the secret rules
would replace in them is replaced first (``CurrentTest.names``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy_addon.redaction.secret_rules import Secrets
from proxy_addon.store.layout import per_test_dir


@dataclass(slots=True)
class CurrentTest:
    """The test being run, as told over the control channel: its id and the name of its own
    cassette (as told: kept in memory only), and the misses it caused so far."""

    test_id: str | None = None
    cassette: str | None = None
    misses: list[str] = field(default_factory=list)
    _names: dict[Secrets, tuple[str | None, str | None]] = field(default_factory=dict)

    def begin(self, test_id: str | None, cassette: str | None) -> None:
        """A test begins (``None, None``: it ended)."""
        self.test_id, self.cassette = test_id, cassette
        self.misses = []
        self._names.clear()

    def names(self, secrets: Secrets, header: str | None = None) -> tuple[str | None, str | None]:
        """The test id (``header``: a request's ``x-cassette-test-id``, else the test's) and
        the test directory a flow is filed under, with what ``secrets`` (the run's rules,
        knowing the flow's own key) would replace in them replaced: a test parametrised with
        a key is named with ``<redacted>``, the same on every run, so replay finds it."""
        named = self._names.get(secrets)
        if named is None:
            if len(self._names) >= 16:  # a flow's own key: one entry per key in use
                self._names.clear()
            named = self._names[secrets] = (
                secrets.redacted(self.test_id) if self.test_id else None,
                per_test_dir(self.cassette, secrets) if self.cassette else None,
            )
        return (secrets.redacted(header), named[1]) if header else named


def handle(
    current: CurrentTest,
    method: str,
    path: str,
    body: bytes,
    secrets: Secrets,
    status: dict[str, Any],
) -> tuple[int, Any]:
    """(status, JSON answer) for one control request; updates ``current``. The answer names
    the test as the files will (``secrets``: the run's rules); ``status``: the answer to
    ``GET /status``."""
    path = path.split("?", 1)[0]
    if path == "/status":
        return 200, status
    if path == "/test" and method == "POST":
        try:
            data = orjson.loads(body or b"{}")
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            return 400, {"error": "expected a JSON object"}
        test_id, name = data.get("test_id"), data.get("cassette")
        current.begin(
            test_id if isinstance(test_id, str) else None,
            name if isinstance(name, str) and name else None,
        )
        shown_id, test_dir = current.names(secrets)
        return 200, {"test_id": shown_id, "test_dir": test_dir}
    if path == "/misses":
        return 200, {"misses": current.misses}
    return 404, {"error": f"no control endpoint {method} {path}"}
