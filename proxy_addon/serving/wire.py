"""What a replay sends for a recorded response: its headers without the transport ones (the
body is stored decoded, so a stale ``content-length`` or ``content-encoding`` would be wrong),
and its body bytes, a stream framed back into SSE, NDJSON or an AWS event stream."""

from __future__ import annotations

from proxy_addon.bodies.streams import frame
from proxy_addon.formats import exchange
from proxy_addon.model import RecordedResponse

WireHeaders = list[tuple[bytes, bytes]]


def wire_headers(resp: RecordedResponse) -> WireHeaders:
    return [
        (k.encode(), v.encode())
        for k, v in resp.headers
        if k.lower() not in exchange.TRANSPORT_RESPONSE_HEADERS
    ]


def wire_body(resp: RecordedResponse) -> bytes:
    if resp.stream is not None:
        return frame(resp.stream.format, resp.stream.events)
    return resp.body.to_bytes() if resp.body is not None else b""


def wire(resp: RecordedResponse) -> tuple[WireHeaders, bytes]:
    """Headers (with the body's ``content-length``) and body bytes of a response replayed
    whole. The replay hook builds them once per response (``mitm/replay.replayed_response``): a
    request replayed many times costs a lookup, not a JSON encoding per event."""
    body = wire_body(resp)
    return [*wire_headers(resp), (b"content-length", b"%d" % len(body))], body
