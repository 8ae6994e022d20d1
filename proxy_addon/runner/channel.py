"""The control channel's names (``runner/control.py`` answers it): what the runners that
start the proxy need of it, apart from the proxy's modules, which a runner does not import
(``cassette run`` would pay 0.3 s for them before it starts the proxy)."""

from __future__ import annotations

CONTROL_HOST = "cassette.control"
TEST_ID_HEADER = "x-cassette-test-id"  # removed before matching and forwarding
