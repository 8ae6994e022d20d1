"""The ``cassette`` content view of mitmproxy (mitmweb, mitmdump ``--set flow_detail=3``,
the console): an LLM stream as its assembled answer and its events, a cassette file as its
recording. Registered when the addon loads; the rendering is ``bodies/view.py``."""

from __future__ import annotations

from mitmproxy import contentviews
from mitmproxy.contentviews import Contentview, Metadata, SyntaxHighlight

from proxy_addon.bodies import view

# Above mitmproxy's own views for these bodies: raw is 0.1, json 1 (for application/json).
PRIORITY = 2.0


class CassetteContentview(Contentview):
    name = "cassette"  # in mitmweb's view menu and its content API: /content/cassette.json
    syntax_highlight: SyntaxHighlight = "none"

    def prettify(self, data: bytes, metadata: Metadata) -> str:
        text = view.render(data, metadata.content_type)
        if text is None:  # asked for by name on another body: mitmproxy says it cannot parse
            raise ValueError("neither an SSE, NDJSON or AWS event stream nor a cassette file")
        return text

    def render_priority(self, data: bytes, metadata: Metadata) -> float:
        return PRIORITY if view.applies(data, metadata.content_type) else -1


def register() -> None:
    """Add the view to mitmproxy's registry (a second call replaces it, as mitmproxy does)."""
    contentviews.add(CassetteContentview())
