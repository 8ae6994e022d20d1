"""Test-only addon: a start-up that is slow, or a proxy that is not as intended.

Loaded after the cassette addon with ``-s``:

- ``--set startup_delay=SECONDS``: its ``running`` hook blocks that long, as a start-up on a
  loaded machine (or over a large directory) takes time; the proxy says it is ready only after;
- ``--set startup_mode=MODE``: the control channel's ``GET /status`` answers that mode instead
  of the addon's, as a proxy whose addon is not the one intended would;
- ``--set startup_stop_gate=PATH``: its ``done`` hook (the proxy stopping) creates
  ``PATH.stopping``, then waits (60 s at most) until ``PATH`` exists, so a test can act at that
  moment.
"""

import time
from pathlib import Path

import orjson
from mitmproxy import ctx, http


class Startup:
    def load(self, loader) -> None:  # type: ignore[no-untyped-def]
        loader.add_option("startup_delay", str, "0", "Seconds the running hook blocks.")
        loader.add_option("startup_mode", str, "", "The mode /status answers, if set.")
        loader.add_option("startup_stop_gate", str, "", "A file the stopping proxy waits for.")

    def running(self) -> None:
        time.sleep(float(ctx.options.startup_delay))  # the slow start itself, no wait on anything

    def done(self) -> None:
        if not ctx.options.startup_stop_gate:
            return
        gate = Path(ctx.options.startup_stop_gate)
        gate.with_name(gate.name + ".stopping").touch()
        deadline = time.monotonic() + 60
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.01)  # a file has no event to wait on here

    def request(self, flow: http.HTTPFlow) -> None:
        if ctx.options.startup_mode and flow.request.pretty_url.endswith("cassette.control/status"):
            status = orjson.loads(flow.response.content) if flow.response else {}
            status["mode"] = ctx.options.startup_mode
            flow.response = http.Response.make(200, orjson.dumps(status))


addons = [Startup()]
