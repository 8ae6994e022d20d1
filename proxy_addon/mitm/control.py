"""The control channel's hook: requests to ``cassette.control`` are answered here, never
forwarded (the protocol is in ``proxy_addon.control``)."""

from __future__ import annotations

import orjson
from mitmproxy import http

from proxy_addon.mitm.state import State
from proxy_addon.runner import channel, control


class ControlChannel:
    def __init__(self, state: State) -> None:
        self.state = state

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.request.host != channel.CONTROL_HOST:
            return
        status, answer = control.handle(
            self.state.current,
            flow.request.method,
            flow.request.path,
            flow.request.get_content(strict=False) or b"",
            self.state.settings.rules.secrets,
            self.state.status(),
        )
        flow.response = http.Response.make(
            status, orjson.dumps(answer), {"content-type": "application/json"}
        )
