"""Test-only addon: faults inside the cassette addon, to show that the proxy fails closed.

Loaded after the cassette addon with ``-s``:

- ``--set fault_hooks=cassette_replayhooks.request,cassette_recordhooks.response``: those hooks of
  the cassette addon raise ``RuntimeError`` for requests whose path contains ``/fault/``, as a
  bug in them would (patched on the addon itself, inside the guard that wraps it), quoting the
  request's ``authorization`` header as an error about a header might;
- ``--set fault_drop_response=true``: a response the cassette addon set for a request whose path
  contains ``/drop/`` is removed, as a hook that answered nothing would leave it; mitmproxy
  then forwards the flow, and only the connection guard stands in the way.
"""

import functools
import inspect
from collections.abc import Sequence

from mitmproxy import ctx, http


def _raising(hook, name):  # type: ignore[no-untyped-def]
    def check(flow: http.HTTPFlow) -> None:
        if "/fault/" in flow.request.path:
            raise RuntimeError(
                f"injected fault in {name} ({flow.request.headers.get('authorization', 'no key')})"
            )

    if inspect.iscoroutinefunction(hook):

        @functools.wraps(hook)
        async def async_hook(flow):  # type: ignore[no-untyped-def]
            check(flow)
            await hook(flow)

        return async_hook

    @functools.wraps(hook)
    def sync_hook(flow):  # type: ignore[no-untyped-def]
        check(flow)
        hook(flow)

    return sync_hook


class Faults:
    def load(self, loader) -> None:  # type: ignore[no-untyped-def]
        loader.add_option(
            "fault_hooks",
            Sequence[str],
            [],
            "addon.hook names that raise for requests whose path has /fault/.",
        )
        loader.add_option(
            "fault_drop_response",
            bool,
            False,
            "Remove the response set for requests whose path has /drop/.",
        )

    def running(self) -> None:
        for spec in (s for value in ctx.options.fault_hooks for s in value.split(",")):
            addon_name, hook_name = spec.split(".")
            inner = ctx.master.addons.get("cassette").addon(addon_name)  # inside the guard
            setattr(inner, hook_name, _raising(getattr(inner, hook_name), spec))

    def request(self, flow: http.HTTPFlow) -> None:
        if ctx.options.fault_drop_response and "/drop/" in flow.request.path:
            flow.response = None


addons = [Faults()]
