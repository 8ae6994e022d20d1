"""Base-URL listeners (``--mode reverse:URL@PORT``, see ``proxy_addon.providers``).

A flow that came through a listener already carries the upstream's scheme, host and port
(mitmproxy rewrites them and the Host header), so it is matched and recorded exactly as one that
came through ``HTTPS_PROXY``: one cassette, whichever route. A client that reads both variables
sends its request through the forward proxy *to* the listener; it is routed here straight to the
listener's upstream, so it is recorded once, not twice.
"""

from __future__ import annotations

from mitmproxy import ctx, http
from mitmproxy.proxy.mode_specs import ProxyMode, RegularMode, ReverseMode

from proxy_addon.matching import canonical, hosts


class OwnListeners:
    def __init__(self) -> None:
        self.routes: dict[int, tuple[str, str, int]] = {}  # listener port -> its upstream

    def configure(self, updated: set[str]) -> None:
        if "mode" in updated:
            self.routes = {}
            for spec in ctx.options.mode:
                mode = ProxyMode.parse(spec)
                if isinstance(mode, ReverseMode) and mode.custom_listen_port:
                    scheme = "https" if mode.scheme in ("https", "tls", "http3") else "http"
                    self.routes[mode.custom_listen_port] = (scheme, *mode.address)

    def request(self, flow: http.HTTPFlow) -> None:
        req = flow.request
        if (
            self.routes
            and isinstance(flow.client_conn.proxy_mode, RegularMode)
            and req.port in self.routes
            and hosts.is_loopback(req.host)
        ):
            req.scheme, req.host, req.port = self.routes[req.port]
            req.headers["host"] = canonical.comparable_host(req.scheme, req.host, req.port)
