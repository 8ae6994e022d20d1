"""The mitmproxy glue, the only part of the package that imports mitmproxy: the options and
the hooks, thin, each calling the plain modules beside this package.

A request's way through the hooks: ``control`` (the reserved control host), ``listeners`` (a
request sent to one of our own base-URL listeners goes to its upstream), ``replay`` (answer
from the store, or mark it as a miss or for recording), ``record`` (forward it, tap the stream,
save the exchange), ``websocket`` (a WebSocket's conversation recorded, or its replay pointed
at the loopback server), ``output`` (what mitmdump prints of it, without secrets); ``state``
holds what they share; ``guard`` makes every fault, and every connection a replay did not ask
for, an HTTP error rather than a forwarded request. ``contentview`` shows an LLM stream as its
answer, and a cassette file as its recording, in mitmweb and mitmdump.
"""

from __future__ import annotations

from typing import Any

from proxy_addon.mitm import contentview
from proxy_addon.mitm.control import ControlChannel
from proxy_addon.mitm.guard import ConnectionGuard, FailClosed
from proxy_addon.mitm.listeners import OwnListeners
from proxy_addon.mitm.options import Options
from proxy_addon.mitm.output import OutputScrubber
from proxy_addon.mitm.record import RecordHooks
from proxy_addon.mitm.replay import ReplayHooks
from proxy_addon.mitm.state import State
from proxy_addon.mitm.websocket import WebSocketHooks, websocket_server
from proxy_addon.serving.pacer import Pacer


def make_addons() -> list[Any]:
    """The addons, in hook order, sharing one ``State``, presented to mitmproxy as one addon
    that makes a fault in any flow hook fail closed (``guard``); and the ``cassette`` content
    view registered with mitmproxy."""
    contentview.register()
    state = State()
    return [
        FailClosed(
            [
                Options(state),
                state,
                ConnectionGuard(state),
                ControlChannel(state),
                OwnListeners(),
                ReplayHooks(
                    state,
                    Pacer(state.fault_reporter("replaying a stream")),
                    websocket_server(state),
                ),
                RecordHooks(state),
                WebSocketHooks(state),
                OutputScrubber(state),
            ],
            state,
        )
    ]
