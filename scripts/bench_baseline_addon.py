"""The benchmark's baseline: mitmproxy answering fixed bytes from memory in the request hook.

The ceiling for any replay addon: no matching, no files, no JSON. Loaded by scripts/bench with
``--set bench_responses=FILE`` (a JSON map from request path to status, headers, base64 body).
"""

import base64
import json

from mitmproxy import ctx, http


class FixedResponses:
    def __init__(self) -> None:
        self.table: dict[str, tuple[int, list[tuple[bytes, bytes]], bytes]] = {}

    def load(self, loader) -> None:  # type: ignore[no-untyped-def]
        loader.add_option("bench_responses", str, "", "JSON file of path -> fixed response.")

    def configure(self, updated: set[str]) -> None:
        if "bench_responses" in updated and ctx.options.bench_responses:
            with open(ctx.options.bench_responses) as f:
                raw = json.load(f)
            self.table = {path: (r["status"], [(k.encode(), v.encode()) for k, v in r["headers"]],
                                 base64.b64decode(r["body"])) for path, r in raw.items()}
            ctx.options.update(connection_strategy="lazy")

    def request(self, flow: http.HTTPFlow) -> None:
        found = self.table.get(flow.request.path)
        if found is not None:
            status, headers, body = found
            flow.response = http.Response.make(status, body, headers)


addons = [FixedResponses()]
