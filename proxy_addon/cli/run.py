"""Running things through the proxy: ``cassette run`` (a command, in CI) and ``cassette
proxy`` (the proxy in the foreground). Both start it through ``runner/process.start_proxy``
(the handshake: the addon confirmed ready in the intended mode and directory) and live under
``runner/supervise.Supervisor`` (signals, nothing left behind)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

import click

from proxy_addon.cli.options import dir_option
from proxy_addon.cli.report_flags import as_options, report_options, targets
from proxy_addon.reports import publish
from proxy_addon.runner import providers
from proxy_addon.runner.interface import owned
from proxy_addon.runner.process import (
    RUNNER_OPTIONS,
    START_TIMEOUT_ENV,
    ProxyStartError,
    RunningProxy,
    start_proxy,
    start_timeout,
    user_options,
)
from proxy_addon.runner.providers import placeholder_keys, placeholder_note
from proxy_addon.runner.supervise import GRACE, Supervisor, grace_from
from proxy_addon.summary import MODES, NOTHING_REACHED, Summary

mode_option = click.option(
    "--mode",
    type=click.Choice(MODES),
    default="replay",
    show_default=True,
    help="replay, record, auto (replay hits, record misses), passthrough, "
    "refresh (re-record what has a recording, in its own file).",
)
older_option = click.option(
    "--older-than",
    "max_age",
    metavar="AGE",
    help="cassette_max_age: recordings older than AGE (30d, 12h) are "
    "stale; refresh mode re-records only them, replay warns.",
)
pace_option = click.option(
    "--pace",
    default="0",
    show_default=True,
    help="Stream replay speed: 0 at once, 1 recorded gaps, 0.5 twice as fast.",
)
set_option = click.option(
    "--set",
    "extra",
    multiple=True,
    metavar="NAME=VALUE",
    help="Any other mitmproxy or cassette option, e.g. ssl_insecure=true (an option this "
    "command sets itself, such as cassette_mode, is refused: use its own flag).",
)
listeners_option = click.option(
    "--listeners",
    "listeners",
    default="all",
    show_default=True,
    metavar="all|none|NAME[:PORT],...",
    help="Which base-URL listeners open, on free ports unless a PORT is given: all, none, "
    f"or some of {', '.join(p.name for p in providers.PROVIDERS)} (openai:8081,anthropic).",
)
start_timeout_option = click.option(
    "--start-timeout",
    type=float,
    envvar=START_TIMEOUT_ENV,
    show_envvar=True,
    metavar="SECONDS",
    help="How long the proxy may take to start [default: 60].",
)


def _options(
    interface: str,
    given: dict[str, str],
    extra: Iterable[str],
    internal: dict[str, str],
) -> dict[str, str | list[str]]:
    """The proxy's options: those of the command's own flags (``given``), those it sets behind
    the user's back (``internal``), and the ``--set`` ones, refused where they set one of the
    others again."""
    mine = owned(interface, given, [*internal, *RUNNER_OPTIONS])
    try:
        users = user_options(extra, mine)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--set") from None
    opts: dict[str, str | list[str]] = {
        k: v for k, v in given.items() if k not in ("cassette_mode", "cassette_dir")
    }
    return opts | internal | {"cassette_interface": interface} | users


def _flag_values(mode: str, cassette_dir: Path, pace: str, max_age: str | None) -> dict[str, str]:
    given = {"cassette_mode": mode, "cassette_dir": str(cassette_dir), "cassette_pace": pace}
    return given | ({"cassette_max_age": max_age} if max_age else {})


def _listeners(text: str) -> dict[str, int | None]:
    try:
        return providers.choose(text)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--listeners") from None


def _timeout(value: float | None) -> float:
    try:
        return start_timeout(value)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--start-timeout") from None


def _say(line: str) -> None:
    with contextlib.suppress(OSError):  # the terminal is gone (SIGHUP): nothing to tell
        click.echo(line, err=True)


def _start(
    sup: Supervisor, interface: str, cassette_dir: Path, mode: str, **how: Any
) -> RunningProxy:
    """The proxy ``run`` and ``proxy`` start (``how``: ``start_proxy``'s keywords), under
    ``sup``, whose signals give up the wait: or the command ends, 128+N when a signal came
    while the proxy started, exit 2 saying why it did not start."""
    try:
        return start_proxy(cassette_dir, mode, progress=_say, wake=sup.wake, **how)
    except ProxyStartError as e:
        if e.interrupted:
            _say("cassette: interrupted while the proxy started")
            sys.exit(sup.exit_code(None))
        _fail_start(e, interface)


def _fail_start(e: ProxyStartError, interface: str) -> NoReturn:
    """Exit 2, saying why the proxy did not start (and which option moves a busy port)."""
    how = ""
    if e.busy_role == "proxy" and interface == "proxy":
        how = ": choose another port with --port (0: a free one)"
    elif e.busy_role:
        how = (
            f": move that listener with --listeners {e.busy_role}:PORT, "
            "or leave it out (--listeners none, or the others by name)"
        )
    tail = f"; its last log lines:\n{e.tail}" if e.tail else ""
    raise click.UsageError(f"the proxy did not start: {e.why}{how}{tail}")


@click.command("run", context_settings={"ignore_unknown_options": True})
@mode_option
@pace_option
@older_option
@dir_option
@set_option
@listeners_option
@start_timeout_option
@report_options
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run_command(
    mode: str,
    pace: str,
    max_age: str | None,
    cassette_dir: Path,
    extra: tuple[str, ...],
    listeners: str,
    start_timeout: float | None,
    command: tuple[str, ...],
    **reports: Any,
) -> None:
    """Run COMMAND through a fresh proxy; exit with its code, or 1 when it passed but a replay
    missed, the proxy failed inside, a replay refused an upstream connection, or a stale
    recording was refused (cassette_stale=fail). Clients that read HTTPS_PROXY go through the
    forward proxy, the others through a base-URL listener per provider (OPENAI_BASE_URL,
    ANTHROPIC_BASE_URL, OLLAMA_HOST, ...). If no request reached the proxy it says so; in
    replay mode with CI=true that exits 1.

    SIGINT, SIGTERM and SIGHUP are passed on to COMMAND's process group, which is killed if
    it is still there 10 s later ($CASSETTE_KILL_AFTER; at once on a second signal); the
    summary is printed and the exit code is 128+N, or COMMAND's own non-zero code.

    \b
    Example: cassette run --mode replay -- pytest -q
             cassette run --mode refresh --older-than 30d -- pytest -q
    """
    chosen = _listeners(listeners)
    limit = _timeout(start_timeout)
    to = targets(reports)
    try:
        grace = grace_from(os.environ)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    with tempfile.TemporaryDirectory(prefix="cassette-run-") as tmp, Supervisor(grace) as sup:
        summary_path = Path(tmp) / "summary.json"
        opts = _options(
            "run",
            _flag_values(mode, cassette_dir, pace, max_age),
            extra,
            # the reports are written here, from the summary: the step summary once
            {"cassette_summary": str(summary_path), "cassette_step_summary": "false"},
        )
        proxy = _start(
            sup,
            "run",
            cassette_dir,
            mode,
            confdir=Path(tmp) / "ca",
            options=opts,
            timeout=limit,
            listeners=chosen,
        )
        env = proxy.client_env()
        placeholders = placeholder_keys(env) if mode == "replay" else {}
        try:
            status = sup.run(command, env | placeholders, proxy.ended)
        except OSError as e:  # not found, not executable, a directory...
            proxy.stop()
            raise click.UsageError(f"cannot run {command[0]}: {e.strerror}") from None
        finally:
            died = proxy.process.poll() is not None  # it stopped before we stopped it
            proxy.stop()
        summary = Summary.read(summary_path)
    code = sup.exit_code(status)
    if sup.proxy_died or died:
        _say(
            f"cassette: the proxy stopped while the command ran ({_how_it_ended(proxy)}); "
            f"its last log lines:\n{proxy.tail()}"
        )
        # the command was ended because of it: its own code says nothing then
        sys.exit(1 if sup.proxy_died and sup.signal is None else code or 1)
    if summary is None:
        _say(f"cassette: the proxy wrote no summary; its last log lines:\n{proxy.tail()}")
        sys.exit(code or 1)
    for message in summary.miss_report():
        _say(message)
    _say(summary.line())
    publish.publish(summary, mode, to, os.environ, click.echo, _say)
    if placeholders:
        _say(placeholder_note(placeholders))
    if summary.reached_nothing:
        _say(f"cassette: warning: {NOTHING_REACHED}")
    reason = summary.failure(mode, os.environ)
    if code == 0 and reason is not None and sup.signal is None:
        _say(f"cassette: the run fails: {reason}")
        sys.exit(1)
    sys.exit(code)


@click.command("proxy")
@mode_option
@pace_option
@older_option
@dir_option
@set_option
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port of the forward proxy (0: a free one).",
)
@click.option(
    "--listen-host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on: 0.0.0.0 to serve containers.",
)
@click.option(
    "--confdir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("~/.mitmproxy"),
    show_default=True,
    help="Where mitmproxy keeps its CA.",
)
@listeners_option
@start_timeout_option
@report_options
def proxy_command(
    mode: str,
    pace: str,
    max_age: str | None,
    cassette_dir: Path,
    extra: tuple[str, ...],
    port: int,
    listen_host: str,
    confdir: Path,
    listeners: str,
    start_timeout: float | None,
    **reports: Any,
) -> None:
    """Run the proxy in the foreground and print how to point a client at it, once it is
    ready. Stop it with Ctrl-C (or SIGTERM): it prints its summary and exits 0.

    \b
    Example: cassette proxy --mode record --port 8080
    """
    confdir = confdir.expanduser()
    chosen = _listeners(listeners)
    limit = _timeout(start_timeout)
    given = _flag_values(mode, cassette_dir, pace, max_age) | {
        "listen_port": str(port),
        "listen_host": listen_host,
        "confdir": str(confdir),
        "mode": listeners,
    }
    targets(reports)  # a bad price file stops here, not in the proxy's log
    opts = _options("proxy", given | as_options(reports), extra, {})
    for name in ("listen_port", "listen_host", "confdir", "mode"):
        opts.pop(name)  # passed by start_proxy itself
    with Supervisor(GRACE) as sup:
        proxy = _start(
            sup,
            "proxy",
            cassette_dir,
            mode,
            confdir=confdir,
            options=opts,
            timeout=limit,
            listeners=chosen,
            port=port,
            listen_host=listen_host,
            echo=_relay,
        )
        _say(_how_to_point(proxy.url, proxy.ca_cert, proxy.listeners, listen_host, mode))
        sup.serve(proxy.ended)
        proxy.stop(GRACE)
    if sup.proxy_died:
        _say(f"cassette: the proxy stopped ({_how_it_ended(proxy)})")
        sys.exit(proxy.process.returncode or 1)


def _how_it_ended(proxy: RunningProxy) -> str:
    code = proxy.process.returncode
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def _relay(line: str) -> None:
    """The proxy's own log, as mitmdump prints it."""
    with contextlib.suppress(OSError):
        sys.stdout.write(line)
        sys.stdout.flush()


def _how_to_point(
    url: str, ca: Path, listeners: list[providers.Listener], listen_host: str, mode: str
) -> str:
    lines = [
        f"cassette proxy: ready, {mode} mode. Point a client at it:",
        f"  export HTTPS_PROXY={url} HTTP_PROXY={url}",
        f"  export SSL_CERT_FILE={ca} REQUESTS_CA_BUNDLE={ca} CURL_CA_BUNDLE={ca} "
        f"NODE_EXTRA_CA_CERTS={ca} AWS_CA_BUNDLE={ca}",
    ]
    if listeners:
        lines.append("  or, for clients that ignore HTTPS_PROXY (no CA needed):")
        lines += [
            f"  export {lst.provider.variable}={lst.value}   # -> {lst.upstream}, "
            f"read by {lst.provider.read_by}"
            for lst in listeners
        ]
    if listen_host in ("0.0.0.0", "::"):
        lines.append("  (from a container, use this machine's address instead of 127.0.0.1)")
    lines.append("Stop with Ctrl-C.")
    return "\n".join(lines)
