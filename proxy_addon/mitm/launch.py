"""``python -m proxy_addon.mitm.launch [mitmdump arguments]``: mitmdump with the addon built in,
as ``cassette run``, ``cassette proxy`` and the pytest plugin start it (``runner/process.py``).

Why not ``mitmdump -s addon.py``: mitmproxy reads the command line before it loads a script, so
it cannot check a script's options then, and when it applies them later an error (an option
given twice, a value of the wrong type) silently drops the addon and leaves a plain proxy that
forwards everything. Here the addon is registered before the command line is read: its options
are mitmproxy's own from the start, so a bad or repeated ``--set cassette_*`` is refused at
parse time, and the whole configuration is checked once, before any port is bound. The addon
is never reloaded from its file.

When start-up is over and nothing stopped it, the launcher logs ``cassette: ready on port N``
(``READY``) and the control channel's ``GET /status`` answers ``"ready": true``: the handshake a
runner waits for before it starts a command or a test session.

This relies on ``mitmproxy.tools.main.run``, which is not a documented API (mitmproxy 12.3):
``tests/test_startup.py`` pins the behaviour used here (the master built before the command line
is applied, errors before any bind, ``running`` followed by the last start-up check).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from typing import Any

from mitmproxy import hooks
from mitmproxy.proxy.mode_specs import RegularMode
from mitmproxy.tools import cmdline, main
from mitmproxy.tools.dump import DumpMaster

from proxy_addon.mitm import make_addons
from proxy_addon.mitm.options import undeclared

READY = "cassette: ready on port"
# Set by the runner to its own pid: the proxy then stops when that process dies, whatever
# killed it (Linux's parent-death signal), so a killed `cassette run` leaves no proxy behind.
PARENT_ENV = "CASSETTE_PARENT_PID"
_PR_SET_PDEATHSIG = 1


class CassetteMaster(DumpMaster):
    """mitmdump's master with the addon registered before the command line is applied."""

    def __init__(self, options: Any, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self.cassette = make_addons()
        for addon in self.cassette:
            # declares the options (load) without putting the addon in the chain yet, so its
            # configure does not run option by option while the command line is applied
            self.addons.register(addon)

    async def run(self) -> None:
        unknown = undeclared(self.options)
        if unknown:
            _refuse(f"unknown option(s) {', '.join(unknown)}: no addon declares them")
        chain = self.addons.chain
        # where a `-s` script's addons sit: before NextLayer and Dumper (which prints flows)
        at = chain.index(self.addons.get("scriptloader"))
        chain[at:at] = self.cassette
        try:
            for addon in self.cassette:
                # what mitmproxy does for a script once loaded: one configure, every option
                self.addons.invoke_addon_sync(addon, hooks.ConfigureHook(set(self.options.keys())))
        except Exception as e:  # noqa: BLE001 - any reason: nothing may be served
            _refuse(str(e))
        await super().run()

    async def running(self) -> None:
        await super().running()
        errorcheck = self.addons.get("errorcheck")
        if errorcheck is not None:
            # the check Master.run makes next; made here first, so "ready" is never said by a
            # proxy about to stop on an error logged during start-up
            await errorcheck.shutdown_if_errored()
        state = self.cassette[0].state
        state.ready = True
        port = next(
            (
                server.listen_addrs[0][1]
                for server in self.addons.get("proxyserver").servers
                if isinstance(server.mode, RegularMode) and server.listen_addrs
            ),
            0,
        )
        where = state.store.root if state.store is not None else "?"
        # printed, not logged: seen whatever the log's verbosity
        print(f"{READY} {port}: {state.settings.mode} mode over {where}", flush=True)


def _refuse(reason: str) -> None:
    print(f"mitmdump: {reason}", file=sys.stderr)
    sys.exit(1)


def _die_with_parent() -> None:
    """Stop (SIGTERM: the summary is still written) when the runner that started us dies."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(parent):  # it died before the call above
        sys.exit(1)


def _extra(args: Any) -> dict[str, str]:
    """Flow filters given on the command line, as mitmdump applies them."""
    if args.filter_args:
        v = " ".join(args.filter_args)
        return {"save_stream_filter": v, "readfile_filter": v, "dumper_filter": v}
    return {}


if __name__ == "__main__":
    _die_with_parent()
    sys.argv[0] = "mitmdump"  # how mitmproxy's own messages name the program
    main.run(CassetteMaster, cmdline.mitmdump, sys.argv[1:], _extra)
