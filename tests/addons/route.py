"""Test-only addon: every upstream connection the proxy opens to a host that is not 127.0.0.1 goes
to ``--set route_to=127.0.0.1:PORT`` instead (a stand-in, or a watch on a stopped one's port).

The real cloud SDKs call their real hostnames (``bedrock-runtime.us-east-1.amazonaws.com``,
``oauth2.googleapis.com``, ``<resource>.openai.azure.com``); through ``HTTPS_PROXY`` the proxy
receives those names, records them as they are, and this addon only changes where the TCP
connection goes, before any DNS lookup: the request, its Host header and its TLS server name
stay the real ones. Loaded after the cassette addon with ``-s``, so in replay the connection
guard has already refused the connection (and the watch counts any that got through).
"""

from mitmproxy import ctx
from mitmproxy.proxy.server_hooks import ServerConnectionHookData


class Route:
    def load(self, loader) -> None:  # type: ignore[no-untyped-def]
        loader.add_option("route_to", str, "", "127.0.0.1:PORT every upstream connection goes to")

    def server_connect(self, data: ServerConnectionHookData) -> None:
        target = ctx.options.route_to
        address = data.server.address
        if target and address is not None and address[0] != "127.0.0.1":
            host, _, port = target.rpartition(":")
            data.server.address = (host, int(port))


addons = [Route()]
