"""Start and stop ``mitmdump`` with the addon as a child process on free loopback ports: the
forward proxy (``HTTPS_PROXY``) and, on request, one base-URL listener per provider
(``providers``).

Shared by ``scripts/demo``, the test suite and the CLI, so there is one way to run the proxy.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from proxy_addon.runner.providers import PROVIDERS, Listener, plan

ADDON_SCRIPT = Path(__file__).resolve().parents[1] / "addon.py"
_LISTENING = re.compile(r"HTTP\(S\) proxy listening at 127\.0\.0\.1:(\d+)")


class ProxyStartError(RuntimeError):
    pass


def mitmdump_executable() -> str:
    """``mitmdump`` next to this Python first (the venv's), then on PATH."""
    beside = Path(sys.executable).with_name("mitmdump")
    if beside.exists():
        return str(beside)
    found = shutil.which("mitmdump")
    if found is None:
        raise ProxyStartError("mitmdump not found: install the project (pip install -e .)")
    return found


def set_options(items: Iterable[str]) -> dict[str, str | list[str]]:
    """``NAME=VALUE`` items (``--set`` of ``cassette run``, ``--cassette-set`` of the pytest
    plugin) as proxy options; a name given more than once keeps every value, in order (list
    options such as cassette_normalize take one rule per value). ``ValueError`` names an item
    that is not ``NAME=VALUE``."""
    given: dict[str, list[str]] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"{item!r} is not NAME=VALUE")
        given.setdefault(name, []).append(value)
    return {name: values[0] if len(values) == 1 else values for name, values in given.items()}


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` ports free for TCP and UDP on ``host`` just now (a reverse ``https`` listener binds
    both, for HTTP/3). Another process may take one before mitmdump does: callers retry."""
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


@dataclass
class RunningProxy:
    process: subprocess.Popen[str]
    port: int
    confdir: Path
    lines: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None
    listeners: list[Listener] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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

    def stop(self, timeout: float = 10.0) -> str:
        """Stop with SIGINT (mitmdump may ignore SIGTERM while clients are connected)."""
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
    """The command line of a ``mitmdump`` running the addon (or another ``script``, for a
    benchmark's baseline) as a forward proxy on ``listen_host``:``port`` and a reverse proxy
    per listener; ``extra_scripts`` are loaded after the addon. An option given a list is set
    once per item (list options: ``cassette_normalize``)."""
    args = [
        mitmdump_executable(),
        "--listen-host",
        listen_host,
        "--set",
        f"listen_port={port}",
        "--set",
        f"confdir={confdir}",
        "-s",
        str(script),
    ]
    if listeners:
        args += ["--mode", "regular"]
        for listener in listeners:
            args += ["--mode", listener.mode]
    for extra in extra_scripts:
        args += ["-s", str(extra)]
    if script == ADDON_SCRIPT:
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
    timeout: float = 20.0,
    script: Path = ADDON_SCRIPT,
    extra_scripts: Sequence[Path] = (),
    listeners: bool = False,
) -> RunningProxy:
    """Start ``mitmdump_args(...)`` on a free port, with a base-URL listener per provider when
    ``listeners`` is set (forwarding where this process's variables point); wait until it
    listens. A listener port taken meanwhile is retried."""
    for attempt in range(3):
        planned = plan(os.environ, free_ports(len(PROVIDERS))) if listeners else []
        try:
            return _start(
                cassette_dir, mode, confdir, options, timeout, script, extra_scripts, planned
            )
        except ProxyStartError as e:
            if not planned or "already in use" not in str(e) or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _start(
    cassette_dir: Path | str,
    mode: str,
    confdir: Path | str | None,
    options: Mapping[str, str | Sequence[str]] | None,
    timeout: float,
    script: Path,
    extra_scripts: Sequence[Path],
    listeners: list[Listener],
) -> RunningProxy:
    confdir = Path(confdir) if confdir is not None else Path(cassette_dir).parent / ".mitmproxy"
    confdir.mkdir(parents=True, exist_ok=True)
    args = mitmdump_args(cassette_dir, mode, confdir, 0, options, script, extra_scripts, listeners)
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
        bufsize=1,
    )
    lines: list[str] = []
    port_found = threading.Event()
    port_box: list[int] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            m = _LISTENING.search(line)
            if m and not port_box:
                port_box.append(int(m.group(1)))
                port_found.set()
        port_found.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    while not port_found.wait(0.05):
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait(5)
            raise ProxyStartError("mitmdump did not start in time:\n" + "".join(lines))
    # mitmdump prints "listening" before it exits on a start-up error: give it a moment
    time.sleep(0.2)
    if (
        not port_box
        or proc.poll() is not None
        or any("Error logged during startup" in line for line in lines)
    ):
        if proc.poll() is None:  # it said so and lingers: none may be left behind
            proc.kill()
        proc.wait(5)
        reader.join(5)
        raise ProxyStartError("mitmdump failed to start:\n" + "".join(lines))
    return RunningProxy(proc, port_box[0], confdir, lines, reader, listeners)
