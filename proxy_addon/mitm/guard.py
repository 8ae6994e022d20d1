"""Fail closed: in replay mode nothing reaches the network, whatever goes wrong in the proxy;
in refresh mode nothing does but the re-recording of an existing recording.

Two mechanisms, each enough on its own:

- ``ConnectionGuard``: where mitmproxy opens server connections (``server_connect``, before any
  DNS lookup or TCP connect), a replay refuses every one but those to the addon's own loopback
  servers (the pacer, the WebSocket replay server); a refresh also lets through those to a host
  it forwarded a re-recording to. The client gets mitmproxy's 502, naming the cause.
- ``FailClosed``: every addon of ours is wrapped, so an exception in any of its flow hooks is an
  answer: in replay (and in refresh, for a flow not marked to be re-recorded) a 500 in the
  provider's error shape, naming the exception and the request; in record and auto (and for a
  refresh's re-recording) the live answer goes on untouched and only its cassette is skipped.
  mitmproxy itself would log the error and forward the flow.
"""

from __future__ import annotations

import inspect
import logging
import re
from typing import Any

from mitmproxy import http
from mitmproxy.proxy import layers
from mitmproxy.proxy.layer import NextLayer
from mitmproxy.proxy.layers.http import HTTPMode
from mitmproxy.proxy.server_hooks import ServerConnectionHookData

from proxy_addon import misses
from proxy_addon.mitm.state import State, flow_state, shown_url

log = logging.getLogger("proxy_addon")

# The hooks that see a flow or a connection: an exception in one must never let it through.
FLOW_HOOKS = frozenset({
    "next_layer", "requestheaders", "request", "responseheaders", "response", "error",
    "server_connect", "websocket_start", "websocket_message", "websocket_end",
})


# The modes in which nothing reaches the network that the addon did not decide to forward.
CLOSED_MODES = ("replay", "refresh")

# The start of an HTTP request line: a method token, a space, a target.
_REQUEST_LINE = re.compile(rb"[A-Za-z][A-Za-z0-9._~!#$%&'*+^`|-]{1,31} [^ \r\n]")


class ConnectionGuard:
    """Refuses upstream connections in replay mode, except to the addon's own servers."""

    def __init__(self, state: State) -> None:
        self.state = state

    def next_layer(self, nextlayer: NextLayer) -> None:
        """Inside a tunnel (CONNECT, decrypted or not) mitmproxy guesses the protocol from the
        first bytes, and takes for raw TCP a request whose first line it has not read whole (a
        long query) or whose method is not three letters. In a replay, a tunnel that starts
        like a request line is HTTP, so it is answered (a miss, or mitmproxy's 400) instead of
        closed; anything else is left to mitmproxy (raw TCP is then refused below). Runs before
        mitmproxy's own decision, which keeps a layer an addon chose."""
        if self.state.mode in CLOSED_MODES and nextlayer.layer is None and \
                len(nextlayer.context.layers) > 1 and _REQUEST_LINE.match(nextlayer.data_client()):
            nextlayer.layer = layers.HttpLayer(nextlayer.context, HTTPMode.transparent)

    def server_connect(self, data: ServerConnectionHookData) -> None:
        mode = self.state.mode
        if mode not in CLOSED_MODES:
            return
        address = data.server.address
        target = (address[0], address[1]) if address is not None else None
        if target in self.state.own_servers or \
                (mode == "refresh" and target in self.state.refresh_upstreams):
            return
        where = f"{address[0]}:{address[1]}" if address else "an unknown address"
        allowed = "" if mode == "replay" else " but to re-record an existing recording"
        data.server.error = (f"cassette {mode}: no upstream connection is made in {mode} mode"
                             f"{allowed} (refused {where})")
        self.state.counters.add("refused_connections")
        log.error("cassette: refused an upstream connection to %s in %s mode", where, mode)


def _request_of(arg: Any, state: State) -> str:
    if isinstance(arg, http.HTTPFlow):
        return f"{arg.request.method} {misses.clip(shown_url(arg, state.secrets))}"
    return "a connection"


class FailClosed:
    """An addon of ours, with every flow hook guarded (see the module's docstring). Other
    methods (``load``, ``configure``, ``done``) are the addon's own: a bad option must still
    stop start-up.

    mitmproxy looks every event up on every addon, flow after flow (and whether it has child
    ``addons``): each method is therefore an attribute set once here, so a lookup, found or
    not, is a plain one. Each calls the inner addon's method of that name when it runs, so a
    method replaced on the inner addon later (tests inject faults so) is the one called."""

    def __init__(self, inner: Any, state: State) -> None:
        self._inner = inner
        self._state = state
        # mitmproxy looks addons up by name, which must be unique among all its addons
        self.name = f"cassette_{type(inner).__name__.lower()}"
        self.addons: list[Any] = []  # no children
        for name in dir(type(inner)):  # its methods (not its properties, read at run time)
            if not name.startswith("_") and inspect.isfunction(getattr(type(inner), name)):
                setattr(self, name, self._guarded(name, getattr(inner, name))
                        if name in FLOW_HOOKS else self._delegate(name))

    def _delegate(self, name: str) -> Any:
        def delegate(*args: Any) -> Any:
            return getattr(self._inner, name)(*args)
        return delegate

    def _guarded(self, name: str, attr: Any) -> Any:
        if inspect.iscoroutinefunction(attr):
            async def guarded_async(arg: Any) -> None:
                try:
                    await getattr(self._inner, name)(arg)
                except Exception as e:  # noqa: BLE001 - this is the point
                    self._failed(name, arg, e)
            return guarded_async

        def guarded(arg: Any) -> None:
            try:
                getattr(self._inner, name)(arg)
            except Exception as e:  # noqa: BLE001 - this is the point
                self._failed(name, arg, e)
        return guarded

    def _failed(self, hook: str, arg: Any, error: Exception) -> None:
        state = self._state
        state.counters.add("internal_errors")
        what = f"{type(error).__name__}: {misses.clip(str(error), 200)}"
        request = _request_of(arg, state)
        log.error("cassette: internal error in %s.%s for %s: %s", self.name, hook, request, what,
                  exc_info=error)
        closed = self._closed(arg)
        if isinstance(arg, ServerConnectionHookData):
            if closed:
                arg.server.error = f"cassette {state.mode}: internal error ({what})"
        elif isinstance(arg, http.HTTPFlow):
            if closed and arg.response is None:
                message = (f"cassette: internal error in the proxy ({hook} hook: {what}) while "
                           f"answering {request}; nothing was forwarded ({state.mode} mode).")
                arg.response = http.Response.make(
                    500, misses.error_body(message, "cassette_internal_error",
                                           "cassette_internal_error"),
                    {"content-type": "application/json"})
            elif not closed:
                self._skip_recording(arg, hook)

    def _closed(self, arg: Any) -> bool:
        """Whether a fault must stop the flow: in replay always; in refresh unless the flow was
        marked to be re-recorded (its live answer then goes on, as in record mode)."""
        mode = self._state.mode
        if mode == "refresh" and isinstance(arg, http.HTTPFlow):
            return flow_state(arg, "record") is None
        return mode in CLOSED_MODES

    def _skip_recording(self, flow: http.HTTPFlow, hook: str) -> None:
        """The live answer goes on; its cassette is not written."""
        st = flow_state(flow, "record")
        store = self._state.store
        if st is None or store is None:
            return
        st.action = "pass"
        path = None
        if st.key is not None and st.slot is not None:
            path = store.recorder.path_of(st.key)
            store.recorder.abandon(st.key, st.slot)
        log.error("cassette: not recording %s after the error in %s%s",
                  _request_of(flow, self._state), hook,
                  f" (it would have gone to {path})" if path else "")


def guard_all(addons: list[Any], state: State) -> list[Any]:
    """Every addon wrapped in ``FailClosed``: a hook added to any of them later is guarded too."""
    return [FailClosed(addon, state) for addon in addons]

