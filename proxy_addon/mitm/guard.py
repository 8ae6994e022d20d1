"""Fail closed: in replay mode nothing reaches the network, whatever goes wrong in the proxy;
in refresh mode nothing does but the re-recording of an existing recording.

Two mechanisms, each enough on its own:

- ``ConnectionGuard``: where mitmproxy opens server connections (``server_connect``, before any
  DNS lookup or TCP connect), a replay refuses every one but those to the addon's own loopback
  servers (the pacer, the WebSocket replay server); a refresh also lets through those to a host
  it forwarded a re-recording to. The client gets mitmproxy's 502, naming the cause.
- ``FailClosed``: our addons are presented to mitmproxy as one, which calls each one's flow
  hooks inside a guard, so an exception in any of them is an answer: in replay (and in
  refresh, for a flow not marked to be re-recorded) a 500 in the provider's error shape, naming
  the exception and the request; in record and auto (and for a refresh's re-recording) the
  live answer goes on untouched and only its cassette is skipped. mitmproxy itself would log
  the error and forward the flow.
"""

from __future__ import annotations

import inspect
import logging
import re
from typing import Any

from mitmproxy import hooks, http
from mitmproxy.addonmanager import LoadHook
from mitmproxy.proxy import layers
from mitmproxy.proxy.layer import NextLayer
from mitmproxy.proxy.layers.http import HTTPMode
from mitmproxy.proxy.server_hooks import ServerConnectionHookData

from proxy_addon.mitm.flow import flow_state, shown_url
from proxy_addon.mitm.state import State
from proxy_addon.serving import misses

log = logging.getLogger("proxy_addon")

# The hooks about the proxy itself, not a flow or a connection: a fault in one propagates (a
# bad option must stop start-up). Every other hook, one added later included, runs guarded.
LIFECYCLE_HOOKS = frozenset({"load", "configure", "running", "done", "update"})


# The modes in which nothing reaches the network that the addon did not decide to forward.
CLOSED_MODES = ("replay", "refresh")

NOT_CONFIGURED = (
    "cassette: the addon is not configured (its options were refused at start-up): "
    "nothing is forwarded"
)

# The start of an HTTP request line: a method token, a space, a target.
_REQUEST_LINE = re.compile(rb"[A-Za-z][A-Za-z0-9._~!#$%&'*+^`|-]{1,31} [^ \r\n]")


class ConnectionGuard:
    """Refuses upstream connections where nothing may reach the network (``CLOSED_MODES``:
    replay, and refresh but for the upstreams of the recordings it re-records), except to the
    addon's own servers."""

    def __init__(self, state: State) -> None:
        self.state = state

    def next_layer(self, nextlayer: NextLayer) -> None:
        """Inside a tunnel (CONNECT, decrypted or not) mitmproxy guesses the protocol from the
        first bytes, and takes for raw TCP a request whose first line it has not read whole (a
        long query) or whose method is not three letters. In a replay, a tunnel that starts
        like a request line is HTTP, so it is answered (a miss, or mitmproxy's 400) instead of
        closed; anything else is left to mitmproxy (raw TCP is then refused below). Runs before
        mitmproxy's own decision, which keeps a layer an addon chose."""
        if (
            self.state.settings.mode in CLOSED_MODES
            and nextlayer.layer is None
            and len(nextlayer.context.layers) > 1
            and _REQUEST_LINE.match(nextlayer.data_client())
        ):
            nextlayer.layer = layers.HttpLayer(nextlayer.context, HTTPMode.transparent)

    def request(self, flow: http.HTTPFlow) -> None:
        """A proxy whose options failed to apply (plain mitmdump keeps an addon whose
        ``configure`` raised, until its start-up check stops it) answers, never forwards."""
        if self.state.store is None and flow.response is None:
            flow.response = http.Response.make(
                503,
                misses.error_body(
                    NOT_CONFIGURED, "cassette_not_configured", "cassette_not_configured"
                ),
                {"content-type": "application/json"},
            )

    def server_connect(self, data: ServerConnectionHookData) -> None:
        if self.state.store is None:
            data.server.error = NOT_CONFIGURED
            return
        mode = self.state.settings.mode
        if mode not in CLOSED_MODES:
            return
        address = data.server.address
        target = (address[0], address[1]) if address is not None else None
        if target in self.state.own_servers or (
            mode == "refresh" and target in self.state.refresh_upstreams
        ):
            return
        where = f"{address[0]}:{address[1]}" if address else "an unknown address"
        allowed = "" if mode == "replay" else " but to re-record an existing recording"
        data.server.error = (
            f"cassette {mode}: no upstream connection is made in {mode} mode"
            f"{allowed} (refused {where})"
        )
        self.state.counters.add("refused_connections")
        log.error("cassette: refused an upstream connection to %s in %s mode", where, mode)


def _events() -> frozenset[str]:
    """The events mitmproxy calls addons with: each ``Hook`` class registers its name when it
    is defined (by now mitmproxy has imported them all), but ``load``'s."""
    return frozenset({*hooks.all_hooks, LoadHook.name})


def _request_of(arg: Any, state: State) -> str:
    if isinstance(arg, http.HTTPFlow):
        return f"{arg.request.method} {misses.clip(shown_url(arg, state.settings.rules.secrets))}"
    return "a connection"


class FailClosed:
    """Our addons, presented to mitmproxy as one, with every flow and connection hook of each
    guarded (see the module's docstring). The ``LIFECYCLE_HOOKS`` (``load``, ``configure``,
    ``done``...) are called as they are: a bad option must still stop start-up.

    One addon rather than one per concern: mitmproxy looks every event of every flow and
    connection up on every addon (eight addons cost 4% of replay throughput). Each hook is
    therefore an attribute set once here that calls, in the given order, the addons that have
    it, as mitmproxy would have; each is looked up on its addon when it runs, so a method
    replaced on it later (tests inject faults so) is the one called."""

    name = "cassette"

    def __init__(self, addons: list[Any], state: State) -> None:
        self.state = state  # shared by the hooks; the launcher reports it ready (mitm/launch.py)
        self.addons: list[Any] = []  # no children: mitmproxy walks one addon, not eight
        # by the names faults are reported under (``cassette_replayhooks``)
        self._inner = {f"cassette_{type(addon).__name__.lower()}": addon for addon in addons}
        events = _events()
        names = dict.fromkeys(
            name
            for addon in addons
            for name in dir(type(addon))
            if name in events and inspect.isfunction(getattr(type(addon), name))
        )
        for hook in names:
            owners = [
                (name, addon)
                for name, addon in self._inner.items()
                if inspect.isfunction(getattr(type(addon), hook, None))
            ]
            setattr(self, hook, self._chain(hook, owners))

    def addon(self, name: str) -> Any:
        """One of the addons, by the name its faults are reported under."""
        return self._inner[name]

    def _chain(self, hook: str, owners: list[tuple[str, Any]]) -> Any:
        """The hook calling each owner's method of that name in turn; an async one when any of
        them is. A flow hook's fault is answered (``_failed``) and the next owner still runs,
        as under mitmproxy; another hook's fault propagates."""
        if hook in LIFECYCLE_HOOKS:
            if any(inspect.iscoroutinefunction(getattr(type(a), hook)) for _, a in owners):

                async def chain_async(*args: Any) -> None:
                    for _, addon in owners:
                        result = getattr(addon, hook)(*args)
                        if inspect.isawaitable(result):
                            await result

                return chain_async

            def chain(*args: Any) -> None:
                for _, addon in owners:
                    getattr(addon, hook)(*args)

            return chain

        if any(inspect.iscoroutinefunction(getattr(type(a), hook)) for _, a in owners):

            async def guarded_async(arg: Any) -> None:
                for name, addon in owners:
                    try:
                        result = getattr(addon, hook)(arg)
                        if result is not None and inspect.isawaitable(result):
                            await result
                    except Exception as e:  # noqa: BLE001 - this is the point
                        self._failed(name, hook, arg, e)

            return guarded_async

        def guarded(arg: Any) -> None:
            for name, addon in owners:
                try:
                    getattr(addon, hook)(arg)
                except Exception as e:  # noqa: BLE001 - this is the point
                    self._failed(name, hook, arg, e)

        return guarded

    def _failed(self, addon: str, hook: str, arg: Any, error: Exception) -> None:
        state = self.state
        state.counters.add("internal_errors")
        # an exception's text may quote what it choked on: the flow's own key included
        st = flow_state(arg) if isinstance(arg, http.HTTPFlow) else None
        what = (st.secrets if st is not None else state.settings.rules.secrets).replace_in_log(
            f"{type(error).__name__}: {misses.clip(str(error), 200)}"
        )
        request = _request_of(arg, state)
        log.error(
            "cassette: internal error in %s.%s for %s: %s",
            addon,
            hook,
            request,
            what,
            exc_info=error,
        )
        closed = self._closed(arg)
        if isinstance(arg, ServerConnectionHookData):
            if closed:
                arg.server.error = f"cassette {state.settings.mode}: internal error ({what})"
        elif isinstance(arg, http.HTTPFlow):
            if closed and arg.response is None:
                message = (
                    f"cassette: internal error in the proxy ({hook} hook: {what}) while "
                    f"answering {request}; nothing was forwarded ({state.settings.mode} mode)."
                )
                arg.response = http.Response.make(
                    500,
                    misses.error_body(
                        message, "cassette_internal_error", "cassette_internal_error"
                    ),
                    {"content-type": "application/json"},
                )
            elif not closed:
                self._skip_recording(arg, hook)

    def _closed(self, arg: Any) -> bool:
        """Whether a fault must stop the flow: in replay always; in refresh unless the flow was
        marked to be re-recorded (its live answer then goes on, as in record mode)."""
        mode = self.state.settings.mode
        if mode == "refresh" and isinstance(arg, http.HTTPFlow):
            return flow_state(arg, "record") is None
        return mode in CLOSED_MODES

    def _skip_recording(self, flow: http.HTTPFlow, hook: str) -> None:
        """The live answer goes on; its cassette is not written."""
        st = flow_state(flow, "record")
        store = self.state.store
        if st is None or store is None:
            return
        st.action = "pass"
        path = None
        if st.key is not None and st.slot is not None:
            path = store.recorder.path_of(st.key)
            store.recorder.abandon(st.key, st.slot)
        log.error(
            "cassette: not recording %s after the error in %s%s",
            _request_of(flow, self.state),
            hook,
            f" (it would have gone to {path})" if path else "",
        )
