"""Start and stop the proxy as a child process: the forward proxy (``HTTPS_PROXY``) and, on
request, base-URL listeners for the providers (``providers``), on free loopback ports unless
told otherwise.

Shared by ``scripts/demo``, the test suite and the CLI, so there is one way to run the proxy.
The addon runs in the launcher (``mitm/launch.py``: mitmdump with the addon built in, its options
checked before any port is bound). ``start_proxy`` returns only once the proxy said it is ready
and answered the handshake (the control channel's ``GET /status``) in the intended mode, over
the intended directory: never a proxy without the addon.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import orjson

from proxy_addon.runner.channel import CONTROL_HOST
from proxy_addon.runner.providers import Listener, plan
from proxy_addon.summary import INDEXING

ADDON_SCRIPT = Path(__file__).resolve().parents[1] / "addon.py"
LAUNCHER = "proxy_addon.mitm.launch"
# What the launcher prints once start-up is over and nothing stopped it (mitm/launch.py).
READY = "cassette: ready on port"
_READY = re.compile(re.escape(READY) + r" (\d+)")
# Set by the runner to its pid: the proxy stops when the runner dies (mitm/launch.py).
PARENT_ENV = "CASSETTE_PARENT_PID"
_LISTENING = re.compile(r"HTTP\(S\) proxy listening at \S*:(\d+)\.")
_BUSY = re.compile(r"failed to listen on \S*:(\d+) .*(?:already in use|in use)")

START_TIMEOUT_ENV = "CASSETTE_START_TIMEOUT"
DEFAULT_START_TIMEOUT = 60.0  # seconds: a loaded 2-core CI machine starts it in 1-5
SLOW_START = 1.0  # seconds before "starting the proxy..." is said
STARTING = "cassette: starting the proxy..."
LOG_TAIL = 15  # lines of the proxy's own log quoted when it did not start
# The options start_proxy sets itself: a user's --set may not set them again.
RUNNER_OPTIONS = ("cassette_dir", "cassette_mode", "listen_host", "listen_port", "confdir", "mode")


class ProxyStartError(RuntimeError):
    """The proxy did not start: ``why``, then the last lines of its log (``tail``).
    ``busy_port``: a port it could not take, with ``busy_role`` (``"proxy"`` or a provider's
    name); ``interrupted``: a signal stopped the start."""

    def __init__(
        self,
        why: str,
        tail: str = "",
        busy_port: int | None = None,
        busy_role: str = "",
        interrupted: bool = False,
    ) -> None:
        super().__init__(f"{why}; its last log lines:\n{tail}" if tail else why)
        self.why = why
        self.tail = tail
        self.busy_port = busy_port
        self.busy_role = busy_role
        self.interrupted = interrupted


def mitmdump_executable() -> str:
    """``mitmdump`` next to this Python first (the venv's), then on PATH."""
    beside = Path(sys.executable).with_name("mitmdump")
    if beside.exists():
        return str(beside)
    found = shutil.which("mitmdump")
    if found is None:
        raise ProxyStartError("mitmdump not found: install the project (pip install -e .)")
    return found


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` ports free for TCP and UDP on ``host`` just now (a reverse ``https`` listener binds
    both, for HTTP/3). Another process may take one before the proxy does: callers retry."""
    ports: list[int] = []
    held: list[socket.socket] = []
    try:
        while len(ports) < n:
            tcp = socket.socket()
            tcp.bind((host, 0))
            held.append(tcp)
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                udp.bind((host, tcp.getsockname()[1]))
            except OSError:
                udp.close()
                continue
            held.append(udp)
            ports.append(tcp.getsockname()[1])
    finally:
        for sock in held:
            sock.close()
    return ports


def start_timeout(value: float | str | None, environ: Mapping[str, str] = os.environ) -> float:
    """The start-up limit in seconds: ``value`` if given, else ``$CASSETTE_START_TIMEOUT``, else
    ``DEFAULT_START_TIMEOUT``; ``ValueError`` for anything but a positive number."""
    given = value if value is not None else environ.get(START_TIMEOUT_ENV)
    if given is None or given == "":
        return DEFAULT_START_TIMEOUT
    try:
        seconds = float(given)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 1e6:
        source = START_TIMEOUT_ENV if value is None else "the start-up limit"
        raise ValueError(f"{source} must be a number of seconds above 0, not {given!r}")
    return seconds


@dataclass
class RunningProxy:
    process: subprocess.Popen[str]
    port: int
    confdir: Path
    lines: list[str] | deque[str] = field(default_factory=list)
    _reader: threading.Thread | None = None
    listeners: list[Listener] = field(default_factory=list)
    host: str = "127.0.0.1"  # where clients reach it
    ended: threading.Event = field(default_factory=threading.Event)  # its output closed

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ca_cert(self) -> Path:
        """The public CA certificate clients must trust (never the key file)."""
        return self.confdir / "mitmproxy-ca-cert.pem"

    def client_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment that points clients in any language at this proxy: the forward proxy and
        its CA for clients that read HTTPS_PROXY, and each provider's base-URL variable at its
        listener for those that do not."""
        env = dict(os.environ if base is None else base)
        ca = str(self.ca_cert)
        env.update(
            {
                "HTTPS_PROXY": self.url,
                "HTTP_PROXY": self.url,
                "https_proxy": self.url,
                "http_proxy": self.url,
                "SSL_CERT_FILE": ca,
                "REQUESTS_CA_BUNDLE": ca,
                "CURL_CA_BUNDLE": ca,
                "NODE_EXTRA_CA_CERTS": ca,
                "AWS_CA_BUNDLE": ca,  # boto3 reads it before REQUESTS_CA_BUNDLE
            }
        )
        env.update({listener.provider.variable: listener.value for listener in self.listeners})
        for name in ("NO_PROXY", "no_proxy"):  # loopback upstreams must go through us too
            env.pop(name, None)
        return env

    def peak_rss_mb(self) -> float:
        """The proxy process's peak resident memory so far (Linux), for tests and benchmarks."""
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM in /proc: peak memory is measured on Linux only")

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def tail(self, n: int = LOG_TAIL) -> str:
        """The last ``n`` lines of its log."""
        return "".join(list(self.lines)[-n:])

    def stop(self, timeout: float = 10.0) -> str:
        """Stop it as Ctrl-C does (its summary is written), killed if it takes longer than
        ``timeout``; returns its log."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._reader is not None:
            self._reader.join(timeout)
        return self.log


def mitmdump_args(
    cassette_dir: Path | str,
    mode: str,
    confdir: Path,
    port: int = 0,
    options: Mapping[str, str | Sequence[str]] | None = None,
    script: Path = ADDON_SCRIPT,
    extra_scripts: Sequence[Path] = (),
    listeners: Sequence[Listener] = (),
    listen_host: str = "127.0.0.1",
) -> list[str]:
    """The command line of the proxy: the launcher (the addon built in), or plain ``mitmdump``
    with another ``script`` (a benchmark's baseline); a forward proxy on ``listen_host``:``port``
    and a reverse proxy per listener; ``extra_scripts`` loaded after the addon. An option given a
    list is set once per item (list options: ``cassette_normalize``)."""
    ours = script == ADDON_SCRIPT
    args = [sys.executable, "-m", LAUNCHER] if ours else [mitmdump_executable(), "-s", str(script)]
    args += ["--listen-host", listen_host, "--set", f"listen_port={port}"]
    args += ["--set", f"confdir={confdir}"]
    if listeners:
        args += ["--mode", "regular"]
        for listener in listeners:
            args += ["--mode", listener.mode]
    for extra in extra_scripts:
        args += ["-s", str(extra)]
    if ours:
        args += ["--set", f"cassette_dir={cassette_dir}", "--set", f"cassette_mode={mode}"]
    for name, value in (options or {}).items():
        for item in [value] if isinstance(value, str) else value:
            args += ["--set", f"{name}={item}"]
    return args


def start_proxy(
    cassette_dir: Path | str,
    mode: str = "replay",
    confdir: Path | str | None = None,
    options: Mapping[str, str | Sequence[str]] | None = None,
    timeout: float | None = None,
    script: Path = ADDON_SCRIPT,
    extra_scripts: Sequence[Path] = (),
    listeners: Mapping[str, int | None] | None = None,
    port: int = 0,
    listen_host: str = "127.0.0.1",
    progress: Callable[[str], None] | None = None,
    echo: Callable[[str], None] | None = None,
    wake: threading.Event | None = None,
) -> RunningProxy:
    """Start the proxy and wait until it is ready (``timeout`` seconds at most, see
    ``start_timeout``; ``progress`` is told ``STARTING`` once after ``SLOW_START``).

    ``listeners``: provider name -> port (None: a free one), forwarding where this process's
    variables point; ``port``: the forward proxy's (0: a free one). A free port another process
    takes meanwhile is picked again; a port given that is in use is a ``ProxyStartError`` naming
    it. ``echo``: called with each line of the proxy's log as it comes (then only the last
    lines are kept). ``wake``: an event the caller sets to give up the start (a signal; the
    proxy is then stopped and ``ProxyStartError`` raised, ``interrupted``). The proxy runs in
    its own process group, so a terminal's Ctrl-C reaches the runner, which stops it in turn."""
    limit = start_timeout(timeout)
    wanted = dict(listeners or {})
    for attempt in range(3):
        free = iter(free_ports(sum(p is None for p in wanted.values())))
        ports = {name: p if p is not None else next(free) for name, p in wanted.items()}
        try:
            planned = plan(os.environ, ports, _reach(listen_host))
        except ValueError as e:
            raise ProxyStartError(str(e)) from None
        try:
            return _start(
                cassette_dir,
                mode,
                confdir,
                options,
                limit,
                script,
                extra_scripts,
                planned,
                port,
                listen_host,
                progress,
                echo,
                wake,
            )
        except ProxyStartError as e:
            picked = {p for name, p in ports.items() if wanted[name] is None}
            if e.busy_port not in picked or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _reach(listen_host: str) -> str:
    """Where a client on this machine reaches a proxy listening on ``listen_host``."""
    return "127.0.0.1" if listen_host in ("0.0.0.0", "::", "") else listen_host


def _start(
    cassette_dir: Path | str,
    mode: str,
    confdir: Path | str | None,
    options: Mapping[str, str | Sequence[str]] | None,
    limit: float,
    script: Path,
    extra_scripts: Sequence[Path],
    listeners: list[Listener],
    port: int,
    listen_host: str,
    progress: Callable[[str], None] | None,
    echo: Callable[[str], None] | None,
    wake: threading.Event | None,
) -> RunningProxy:
    confdir = Path(confdir) if confdir is not None else Path(cassette_dir).parent / ".mitmproxy"
    confdir.mkdir(parents=True, exist_ok=True)
    args = mitmdump_args(
        cassette_dir, mode, confdir, port, options, script, extra_scripts, listeners, listen_host
    )
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        stdin=subprocess.DEVNULL,
        bufsize=1,
        env=os.environ | {PARENT_ENV: str(os.getpid())},
        process_group=0,
    )
    lines: list[str] | deque[str] = deque(maxlen=1000) if echo else []
    started = threading.Event()  # ready (or, for another script, listening), gone, or woken
    if wake is not None:
        threading.Thread(target=_relay_event, args=(wake, started), daemon=True).start()
    port_box: list[int] = []
    ended = threading.Event()
    ours = script == ADDON_SCRIPT

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if echo is not None:
                echo(line)
            if not port_box:
                if INDEXING in line and progress is not None:  # a large folder: why it waits
                    progress(line[line.index(INDEXING) :].rstrip("\n"))
                m = (_READY if ours else _LISTENING).search(line)
                if m:
                    port_box.append(int(m.group(1)))
                    started.set()
        ended.set()
        started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    proxy = RunningProxy(proc, 0, confdir, lines, reader, listeners, _reach(listen_host), ended)
    began = time.monotonic()
    if not started.wait(min(SLOW_START, limit)) and progress is not None:
        progress(STARTING)
    woke = started.wait(max(0.0, limit - (time.monotonic() - began)))
    if not port_box:
        if ended.is_set():
            proc.wait(10)
            # the launcher's own one-line reason, if it gave one (an option it refused)
            said = [ln.strip() for ln in lines if ln.startswith("mitmdump: ")]
            _give_up(
                proxy,
                said[-1]
                if said
                else f"the proxy stopped during start-up (exit code {proc.returncode})",
            )
        if woke and wake is not None and wake.is_set():
            _give_up(proxy, "the proxy's start-up was interrupted", interrupted=True)
        _give_up(proxy, f"the proxy did not start within {limit:g} s ({START_TIMEOUT_ENV})")
    proxy.port = port_box[0]
    if ours:
        try:
            _handshake(proxy, cassette_dir, mode, (options or {}).get("cassette_interface"))
        except ProxyStartError as e:
            _give_up(proxy, str(e))
    return proxy


def _relay_event(source: threading.Event, target: threading.Event) -> None:
    source.wait()
    target.set()


def _give_up(proxy: RunningProxy, why: str, interrupted: bool = False) -> NoReturn:
    """Stop what is left of a proxy that did not start; raise why, with its log's last lines
    and the port it could not take, if that was it."""
    proxy.stop(5)
    busy = next((int(m.group(1)) for m in map(_BUSY.search, proxy.lines) if m), None)
    role = ""
    if busy is not None:
        role = next((lst.provider.name for lst in proxy.listeners if lst.port == busy), "proxy")
        why = f"port {busy} is already in use ({role if role != 'proxy' else 'the proxy'})"
    raise ProxyStartError(why, proxy.tail(), busy, role, interrupted)


def _handshake(
    proxy: RunningProxy, cassette_dir: Path | str, mode: str, interface: str | Sequence[str] | None
) -> None:
    """Ask the proxy, through its own port, whether the addon is ready in ``mode`` over
    ``cassette_dir`` for ``interface``: the proof that what the command will talk to is the
    addon as intended, not a proxy that lost it."""
    conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=10)
    try:
        conn.request("GET", f"http://{CONTROL_HOST}/status", headers={"Host": CONTROL_HOST})
        answer = conn.getresponse()
        raw = answer.read()
    except OSError as e:
        raise ProxyStartError(f"the proxy did not answer its control channel ({e})") from None
    finally:
        conn.close()
    try:
        status = orjson.loads(raw) if answer.status == 200 else None
    except orjson.JSONDecodeError:
        status = None
    if not isinstance(status, dict):
        raise ProxyStartError(
            f"the proxy's control channel answered {answer.status}, not the addon's status"
        )
    want = {
        "ready": True,
        "mode": mode,
        "dir": os.path.realpath(cassette_dir),
        "interface": interface if isinstance(interface, str) else "mitmdump",
    }
    wrong = [f"{k} is {status.get(k)!r}, not {v!r}" for k, v in want.items() if status.get(k) != v]
    if wrong:
        raise ProxyStartError("the addon is not as intended: " + "; ".join(wrong))


def user_options(
    items: Iterable[str], owned: Mapping[str, str], set_flag: str = "--set"
) -> dict[str, str | list[str]]:
    """``NAME=VALUE`` items (``--set`` of ``cassette run``, ``--cassette-set`` of the pytest
    plugin) as proxy options; a name given more than once keeps every value, in order (list
    options such as cassette_normalize take one rule per value; the proxy refuses a repeated
    option of any other kind). ``ValueError`` names an item that is not ``NAME=VALUE``, and an
    option the command sets itself: ``owned`` maps each to how it was set (``--mode replay``)."""
    given: dict[str, list[str]] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"{item!r} is not NAME=VALUE")
        if name in owned:
            raise ValueError(
                f"{name} is given twice: by {owned[name]} and by {set_flag} {item}; give it once"
            )
        given.setdefault(name, []).append(value)
    return {name: values[0] if len(values) == 1 else values for name, values in given.items()}
