"""Test-only addon: a start-up that is slow, or a proxy that is not as intended.

Loaded after the cassette addon with ``-s``:

- ``--set startup_delay=SECONDS``: its ``running`` hook blocks that long, as a start-up on a
  loaded machine (or over a large directory) takes time; the proxy says it is ready only after;
- ``--set startup_mode=MODE``: the control channel's ``GET /status`` answers that mode instead
  of the addon's, as a proxy whose addon is not the one intended would.
"""

import time

import orjson
from mitmproxy import ctx, http


class Startup:
    def load(self, loader) -> None:  # type: ignore[no-untyped-def]
        loader.add_option("startup_delay", str, "0", "Seconds the running hook blocks.")
        loader.add_option("startup_mode", str, "", "The mode /status answers, if set.")

    def running(self) -> None:
        time.sleep(float(ctx.options.startup_delay))  # the slow start itself, no wait on anything

    def request(self, flow: http.HTTPFlow) -> None:
        if ctx.options.startup_mode and flow.request.pretty_url.endswith("cassette.control/status"):
            status = orjson.loads(flow.response.content) if flow.response else {}
            status["mode"] = ctx.options.startup_mode
            flow.response = http.Response.make(200, orjson.dumps(status))


addons = [Startup()]
