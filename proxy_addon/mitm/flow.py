"""What the addon decided about one flow (``FlowState``, kept in the flow's metadata), and the
small helpers every hook uses on a flow: its state, its body decoded, its URL as a log line may
show it, pointing it at one of the addon's loopback servers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from mitmproxy import http

from proxy_addon.bodies.decoding import decode_limited
from proxy_addon.bodies.taps import BodyTap, StreamCapture
from proxy_addon.bodies.websocket import Capture
from proxy_addon.matching.canonical import CanonicalRequest
from proxy_addon.mitm.state import State
from proxy_addon.model import RecordedRequest
from proxy_addon.redaction import redact
from proxy_addon.redaction.secret_rules import BUILT_IN, Secrets
from proxy_addon.serving.loopback import LoopbackServer
from proxy_addon.store.entries import Entry

META = "cassette"  # key of our FlowState in flow.metadata
T = TypeVar("T")
# A content-encoded request body is decoded for matching and recording up to this size; beyond
# it (a decompression bomb) it is matched and stored by its bytes as sent.
MAX_DECODED_REQUEST = 64 * 1024 * 1024


@dataclass(slots=True)
class FlowState:
    """What the addon decided about one flow, kept in ``flow.metadata[META]``."""

    canonical: CanonicalRequest
    action: str  # "hit", "miss", "stale", "record", "pass", "incidental"
    test_id: str | None = None
    test_dir: str | None = None
    secrets: Secrets = BUILT_IN  # the rules, knowing this flow's own key (memory only)
    key: str | None = None  # its place in the store's recorder (record)
    slot: int | None = None
    request: RecordedRequest | None = None  # as it is written (record)
    capture: StreamCapture | None = None
    body_tap: BodyTap | None = None
    headers_at: float = 0.0  # when the response headers arrived (monotonic)
    # the loopback server answering it (the pacer, the WebSocket replay) and its token
    loopback: tuple[LoopbackServer[Any], str] | None = None
    websocket: Capture | None = None  # a WebSocket conversation being recorded
    refresh: Entry | None = None  # the recording this flow re-records, in its own file (refresh)
    report: dict[str, Any] | None = None  # its record in the run's report (reports/record.py)


def flow_state(flow: http.HTTPFlow, action: str | None = None) -> FlowState | None:
    """The flow's state, if the addon took it (and decided ``action``, when given)."""
    state = flow.metadata.get(META)
    if not isinstance(state, FlowState) or (action is not None and state.action != action):
        return None
    return state


async def send_to_loopback[T](
    flow: http.HTTPFlow, st: FlowState, server: LoopbackServer[T], item: T, state: State
) -> None:
    """Point the flow at one of the addon's loopback servers (which the connection guard
    admits), to be answered with ``item``, under a one-time token the flow carries."""
    port = await server.ensure_started()
    state.own_servers.add(("127.0.0.1", port))
    token = server.register(item)
    st.loopback = (server, token)
    flow.request.scheme, flow.request.host, flow.request.port = "http", "127.0.0.1", port
    flow.request.headers[server.token_header] = token


def shown_url(flow: http.HTTPFlow, secrets: Secrets) -> str:
    """The flow's URL as a log line may show it: user info, secret query values and known
    secrets (the flow's own key too) replaced."""
    st = flow_state(flow)
    return redact.redact_url(flow.request.pretty_url, st.secrets if st is not None else secrets)


def header(message: http.Message, name: bytes) -> str | None:
    """A header's value as ``message.headers.get`` gives it (see ``joined``), ``name`` in lower
    case: read in one pass over the fields, a third of the time of mitmproxy's own lookup."""
    return joined([v for k, v in message.headers.fields if k.lower() == name])


def joined(values: list[bytes] | None) -> str | None:
    """A header's values (in the order sent) as ``headers.get`` gives them: joined by ", ",
    decoded as mitmproxy decodes a header; None when there are none."""
    if not values:
        return None
    if len(values) == 1:  # as nearly always: no generator to run
        return values[0].decode("utf-8", "surrogateescape")
    return ", ".join([v.decode("utf-8", "surrogateescape") for v in values])


def body_of(
    message: http.Message, raw: bytes | None = None, limit: int = MAX_DECODED_REQUEST
) -> bytes:
    """A request's or response's body (or ``raw``, bytes a tap kept of it), decoded from its
    ``content-encoding`` when that can be done within ``limit`` bytes; otherwise as it came."""
    raw = (message.raw_content if raw is None else raw) or b""
    return decoded_body(raw, header(message, b"content-encoding") if raw else None, limit)


def decoded_body(raw: bytes, encoding: str | None, limit: int = MAX_DECODED_REQUEST) -> bytes:
    """``raw`` decoded from ``encoding`` (a ``content-encoding`` value) when that can be done
    within ``limit`` bytes; otherwise as it came."""
    if not raw or encoding is None or not encoding.strip():
        return raw
    decoded = decode_limited(raw, encoding, limit)
    return decoded if decoded is not None else raw
