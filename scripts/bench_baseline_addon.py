"""The benchmark's baselines: mitmproxy with a trivial addon, the ceiling for any addon.

- ``--set bench_responses=FILE`` (a JSON map from request path to status, headers, base64 body):
  answers those paths with fixed bytes from memory in the request hook (no matching, no files,
  no JSON): the replay baseline.
- ``--set bench_stream=true``: passes every response on as it arrives (``flow.response.stream``):
  mitmproxy's own cost of streaming, the recording baseline.
"""

import base64
import json

from mitmproxy import ctx, http


class FixedResponses:
    def __init__(self) -> None:
        self.table: dict[str, tuple[int, list[tuple[bytes, bytes]], bytes]] = {}

    def load(self, loader) -> None:  # type: ignore[no-untyped-def]
        loader.add_option("bench_responses", str, "", "JSON file of path -> fixed response.")
        loader.add_option("bench_stream", bool, False, "Stream every response through.")

    def configure(self, updated: set[str]) -> None:
        if "bench_responses" in updated and ctx.options.bench_responses:
            with open(ctx.options.bench_responses) as f:
                raw = json.load(f)
            self.table = {
                path: (
                    r["status"],
                    [(k.encode(), v.encode()) for k, v in r["headers"]],
                    base64.b64decode(r["body"]),
                )
                for path, r in raw.items()
            }
            ctx.options.update(connection_strategy="lazy")

    def request(self, flow: http.HTTPFlow) -> None:
        found = self.table.get(flow.request.path)
        if found is not None:
            status, headers, body = found
            flow.response = http.Response.make(status, body, headers)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if ctx.options.bench_stream and flow.response is not None:
            flow.response.stream = True


addons = [FixedResponses()]
