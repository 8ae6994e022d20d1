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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy_addon.store.layout import per_test_dir

CONTROL_HOST = "cassette.control"
TEST_ID_HEADER = "x-cassette-test-id"  # removed before matching and forwarding


@dataclass(slots=True)
class CurrentTest:
    """The test being run, as told over the control channel: its id, its own cassette
    directory, and the misses it caused so far."""

    test_id: str | None = None
    test_dir: str | None = None
    misses: list[str] = field(default_factory=list)


def handle(
    current: CurrentTest, method: str, path: str, body: bytes, status: dict[str, Any]
) -> tuple[int, Any]:
    """(status, JSON answer) for one control request; updates ``current``. ``status``: the
    answer to ``GET /status``."""
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
        current.test_id = test_id if isinstance(test_id, str) else None
        current.test_dir = per_test_dir(name) if isinstance(name, str) and name else None
        current.misses = []
        return 200, {"test_id": current.test_id, "test_dir": current.test_dir}
    if path == "/misses":
        return 200, {"misses": current.misses}
    return 404, {"error": f"no control endpoint {method} {path}"}
