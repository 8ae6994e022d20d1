"""No setting opens the proxy: an option given twice, misspelt or of the wrong type never leaves
a proxy that forwards without the addon, whichever way the proxy is started; the runners
start a command only after the handshake; ports, the start-up limit and its messages.

These tests also pin what the launcher (``mitm/launch.py``) relies on in mitmproxy's
undocumented ``tools.main.run``: options refused before any port is bound, and no "ready"
from a proxy that its start-up check stops.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from proxy_addon.cli import main
from proxy_addon.runner import interface, providers
from proxy_addon.runner.process import (
    ADDON_SCRIPT,
    STARTING,
    ProxyStartError,
    mitmdump_executable,
    start_proxy,
)
from tests.conftest import CASSETTE, TEST_ADDONS, UNUSED_PLUGINS
from tests.upstream import FakeUpstreamServer

STARTUP = TEST_ADDONS / "startup.py"
pytest_plugins = ["pytester"]


def _ask_upstream(upstream: FakeUpstreamServer) -> str:
    """A command that sends one request to ``upstream`` through the proxy it is given."""
    return (
        "import httpx; httpx.post("
        f"'{upstream.base_url}/v1/chat/completions', json={{'model': 'gpt-4o', 'messages': []}})"
    )


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


# -- an option given twice, misspelt or of the wrong type -----------------------------------------

CLI_CASES = {
    "run --set mode": (
        ["run", "--set", "cassette_mode=auto"],
        "cassette_mode is given twice: by --mode replay and by --set cassette_mode=auto",
    ),
    "run --set dir": (
        ["run", "--set", "cassette_dir=elsewhere"],
        "cassette_dir is given twice: by --dir {dir} and by --set cassette_dir=elsewhere",
    ),
    "run --set twice": (
        ["run", "--set", "cassette_stale=warn", "--set", "cassette_stale=fail"],
        "Received multiple values for cassette_stale: ['warn', 'fail']",
    ),
    "run --set typo": (["run", "--set", "cassette_mdoe=auto"], "unknown option(s) cassette_mdoe"),
    "run --set summary": (
        ["run", "--set", "cassette_summary=x.json"],
        "cassette_summary is given twice: by cassette run itself",
    ),
    "proxy --set mode": (
        ["proxy", "--port", "{port}", "--set", "cassette_mode=record"],
        "cassette_mode is given twice: by --mode replay and by --set cassette_mode=record",
    ),
    "proxy --set dir": (
        ["proxy", "--port", "{port}", "--set", "cassette_dir=elsewhere"],
        "cassette_dir is given twice: by --dir {dir} and by --set cassette_dir=elsewhere",
    ),
    "proxy --set port": (
        ["proxy", "--port", "{port}", "--set", "listen_port=9"],
        "listen_port is given twice: by --port {port} and by --set listen_port=9",
    ),
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cassette_run_and_proxy_refuse_an_option_set_twice_before_anything_is_served(
    case, tmp_path, http_upstream
):
    """``cassette run``'s command would ask the upstream; for ``cassette proxy`` a client sends
    requests through the port it was told to use from before it starts until it exits."""
    args, message = CLI_CASES[case]
    cassettes = tmp_path / "c"
    cassettes.mkdir()
    port = _free_port()
    args = [a.format(port=port) for a in args]
    if args[0] == "run":
        command = ["--", sys.executable, "-c", _ask_upstream(http_upstream)]
        code, output = _cli(*args, "--dir", str(cassettes), *command)
    else:
        proc = _cassette_proxy(*args[1:], "--dir", str(cassettes), "--confdir", str(tmp_path))
        with _hammering(port, http_upstream) as tries:
            output = proc.communicate(timeout=120)[0]
            if not tries.wait(30):
                proc.kill()
        code = proc.returncode
        assert tries.is_set(), "no request was sent through the proxy's port"
    assert code == 2, output
    assert message.format(dir=cassettes, port=port) in output
    assert http_upstream.state.connections == 0


@pytest.mark.parametrize(
    ("option", "sets", "twice"),
    [
        ("--cassette-mode=replay", "cassette_mode=auto", "--cassette-mode=replay"),
        ("--cassette-mode=replay", "cassette_dir=elsewhere", "--cassette-dir={dir}"),
    ],
    ids=["mode", "dir"],
)
def test_the_plugin_refuses_a_mode_or_directory_set_twice(
    option, sets, twice, pytester, http_upstream
):
    pytester.makepyfile(
        test_app=f"def test_ask():\n    {_ask_upstream(http_upstream)}\n",
    )
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        *UNUSED_PLUGINS,
        "-p",
        "no:langsmith_plugin",
        option,
        f"--cassette-dir={pytester.path}",
        "--cassette-set",
        sets,
        timeout=120,
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    first = twice.format(dir=pytester.path)
    name = sets.split("=")[0]
    result.stderr.fnmatch_lines(
        [f"*{name} is given twice: by {first} and by --cassette-set {sets}*"]
    )
    assert "INTERNALERROR" not in result.stderr.str() + result.stdout.str()
    assert http_upstream.state.connections == 0


PLAIN_CASES = {
    "mode twice": (
        ["--set", "cassette_mode=replay", "--set", "cassette_mode=auto"],
        "Received multiple values for cassette_mode: ['replay', 'auto']",
    ),
    "dir twice": (
        ["--set", "cassette_dir={dir}", "--set", "cassette_dir={dir}/other"],
        "Received multiple values for cassette_dir",
    ),
    "typo": (
        ["--set", "cassette_dir={dir}", "--set", "cassette_mdoe=record"],
        "unknown option(s) cassette_mdoe",
    ),
    "not an integer": (
        ["--set", "cassette_dir={dir}", "--set", "cassette_max_file_mb=abc"],
        "not an integer: abc",
    ),
    # configure fails once the mode is set: the addon stays, half-configured, until the
    # start-up check stops mitmdump; meanwhile it answers 503 and connects nowhere
    "record into a file": (
        ["--set", "cassette_mode=record", "--set", "cassette_dir={dir}/../a-file"],
        "is not a directory",
    ),
}


def _hammer(
    port: int,
    upstream: FakeUpstreamServer,
    stop: threading.Event,
    tried: threading.Event | None = None,
) -> None:
    """Ask the proxy at ``port`` for the upstream again and again until told to stop: a
    proxy that forwards anything shows it in the upstream's count of connections. ``tried``
    is set once a request was sent (or refused at the port)."""
    with httpx.Client(proxy=f"http://127.0.0.1:{port}", timeout=2) as client:
        while not stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                client.post(upstream.base_url + "/v1/chat/completions", json={"messages": []})
            if tried is not None:
                tried.set()
            if upstream.state.connections:
                return


@contextlib.contextmanager
def _hammering(port: int, upstream: FakeUpstreamServer) -> Iterator[threading.Event]:
    """``_hammer`` in a thread for the block's life; the event it yields is set once a request
    was tried."""
    stop, tried = threading.Event(), threading.Event()
    thread = threading.Thread(target=_hammer, args=(port, upstream, stop, tried))
    thread.start()
    try:
        yield tried
    finally:
        stop.set()
        thread.join(10)


@pytest.mark.parametrize("case", list(PLAIN_CASES))
def test_plain_mitmdump_with_a_bad_or_repeated_option_stops_and_never_forwards(
    case, tmp_path, confdir, http_upstream
):
    args, message = PLAIN_CASES[case]
    cassettes = tmp_path / "c"
    cassettes.mkdir()
    (tmp_path / "a-file").write_text("not a directory")
    proc = subprocess.Popen(
        [mitmdump_executable(), "--listen-host", "127.0.0.1", "-p", "0"]
        + ["--set", f"confdir={confdir}", "-s", str(ADDON_SCRIPT)]
        + [a.format(dir=cassettes) for a in args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    stop = threading.Event()
    hammer = None
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:  # until it exits (or, if it serves, until it forwarded something)
        lines.append(line)
        if "HTTP(S) proxy listening at" in line and hammer is None:
            port = int(line.rsplit(":", 1)[1].strip().rstrip("."))
            hammer = threading.Thread(target=_hammer, args=(port, http_upstream, stop))
            hammer.start()
        if http_upstream.state.connections:
            proc.kill()
    stop.set()
    if hammer is not None:
        hammer.join(10)
    proc.wait(10)
    log = "".join(lines)
    assert http_upstream.state.connections == 0, log
    assert proc.returncode == 1, log
    assert message in log


# -- the handshake ---------------------------------------------------------------------------------


def test_a_proxy_not_in_the_intended_mode_is_refused_by_the_handshake(tmp_path, confdir):
    cassettes = tmp_path / "c"
    cassettes.mkdir()
    with pytest.raises(ProxyStartError) as err:
        start_proxy(
            cassettes,
            "replay",
            confdir=confdir,
            extra_scripts=(STARTUP,),
            options={"startup_mode": "record"},
        )
    assert "the addon is not as intended: mode is 'record', not 'replay'" in str(err.value)


def test_the_handshake_names_the_mode_directory_and_interface(tmp_path, confdir):
    cassettes = tmp_path / "c"
    cassettes.mkdir()
    proxy = start_proxy(cassettes, "auto", confdir=confdir, options={"cassette_interface": "run"})
    try:
        with httpx.Client(proxy=proxy.url, trust_env=False) as client:
            status = client.get("http://cassette.control/status").json()
    finally:
        proxy.stop()
    assert status == {
        "ready": True,
        "mode": "auto",
        "dir": str(cassettes.resolve()),
        "interface": "run",
        "recordings": 0,
    }


def test_cassette_run_and_the_plugin_exit_2_when_the_handshake_disagrees(
    tmp_path, pytester, http_upstream
):
    """The test addon, loaded through ``--set scripts=`` as a user's own addon would be, makes
    ``/status`` say ``record`` where ``replay`` was asked: the command never runs."""
    cassettes = tmp_path / "c"
    cassettes.mkdir()
    ran = tmp_path / "ran"
    command = f"open({str(ran)!r}, 'w').close(); {_ask_upstream(http_upstream)}"
    code, output = _cli(
        "run",
        "--dir",
        str(cassettes),
        "--set",
        f"scripts={STARTUP}",
        "--set",
        "startup_mode=record",
        "--",
        sys.executable,
        "-c",
        command,
    )
    assert code == 2, output
    assert (
        "the proxy did not start: the addon is not as intended: mode is 'record', not 'replay'"
    ) in output
    assert not ran.exists()

    pytester.makepyfile(test_app=f"def test_ask():\n    {command}\n")
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        *UNUSED_PLUGINS,
        "-p",
        "no:langsmith_plugin",
        "--cassette-mode=replay",
        f"--cassette-dir={cassettes}",
        "--cassette-set",
        f"scripts={STARTUP}",
        "--cassette-set",
        "startup_mode=record",
        timeout=120,
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*cassette: the proxy did not start: the addon is not as intended: mode is 'record'*"]
    )
    assert not ran.exists()
    assert http_upstream.state.connections == 0


# -- start-up: its limit, and what it says ---------------------------------------------------------


@pytest.mark.slow
def test_a_slow_start_says_so_and_one_past_its_limit_says_why(tmp_path, confdir):
    cassettes = tmp_path / "c"
    cassettes.mkdir()
    told: list[str] = []
    slow = start_proxy(
        cassettes,
        "replay",
        confdir=confdir,
        extra_scripts=(STARTUP,),
        options={"startup_delay": "1.5"},
        progress=told.append,
    )
    slow.stop()
    assert told == [STARTING]
    with pytest.raises(ProxyStartError) as err:
        start_proxy(
            cassettes,
            "replay",
            confdir=confdir,
            extra_scripts=(STARTUP,),
            options={"startup_delay": "60"},
            timeout=10,  # long enough to load its scripts on a loaded machine
        )
    message = str(err.value)
    assert message.startswith("the proxy did not start within 10 s (CASSETTE_START_TIMEOUT)")
    assert "its last log lines:" in message and "Loading script" in message


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--start-timeout", "-1"], {}, "must be a number of seconds above 0"),
        ([], {"CASSETTE_START_TIMEOUT": "soon"}, "CASSETTE_START_TIMEOUT"),
        (["--listeners", "openai,mistral"], {}, "'mistral' is not a provider"),
        (["--listeners", "openai:99999"], {}, "the port must be a number from 1 to 65535"),
    ],
)
def test_bad_start_up_settings_are_one_line_usage_errors(args, env, message, tmp_path):
    result = CliRunner().invoke(main, ["run", *args, "--dir", str(tmp_path), "--", "true"], env=env)
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output


# -- ports ---------------------------------------------------------------------------------------


@pytest.fixture
def held_ports() -> Iterator[list[socket.socket]]:
    """Sockets holding ports (listening, as another program's would)."""
    held: list[socket.socket] = []
    yield held
    for sock in held:
        sock.close()


def _hold(held: list[socket.socket], port: int = 0) -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    held.append(sock)
    return sock.getsockname()[1]


def _cassette_proxy(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [CASSETTE, "proxy", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _until_ready(proc: subprocess.Popen[str]) -> str:
    """Its output up to "Stop with Ctrl-C." (printed once ready), or all of it if it exits."""
    assert proc.stdout is not None
    out = ""
    for line in proc.stdout:
        out += line
        if "Stop with Ctrl-C." in line:
            break
    return out


def _free_run(held: list[socket.socket], n: int) -> int:
    """A port P, free, with P+1..P+n held."""
    while True:
        probe: list[socket.socket] = []
        base = _hold(probe)
        probe[0].close()
        try:
            for offset in range(1, n + 1):
                _hold(held, base + offset)
            return base
        except OSError:
            continue


def test_listeners_take_free_ports_and_a_busy_port_is_named_with_its_option(tmp_path, held_ports):
    cassettes = tmp_path / "c"
    cassettes.mkdir()
    ca = str(tmp_path / "ca")
    port = _free_run(held_ports, len(providers.PROVIDERS))  # P+1..P+6 are taken
    proc = _cassette_proxy("--port", str(port), "--dir", str(cassettes), "--confdir", ca)
    try:
        out = _until_ready(proc)
        assert f"export HTTPS_PROXY=http://127.0.0.1:{port} " in out, out
        listener_ports = {
            int(line.split("=http://127.0.0.1:")[1].split("/")[0].split()[0])
            for line in out.splitlines()
            if any(f"{p.variable}=" in line for p in providers.PROVIDERS)
        }
        # every provider's but the clouds', which open only where their variable is set
        opened = [p for p in providers.PROVIDERS if p.default or os.environ.get(p.variable)]
        assert len(listener_ports) == len(opened)
        assert not listener_ports & set(range(port + 1, port + 1 + len(providers.PROVIDERS)))
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
    assert proc.returncode == 0

    busy = _hold(held_ports)
    taken = _cassette_proxy("--port", str(busy), "--dir", str(cassettes), "--confdir", ca)
    out = taken.communicate(timeout=120)[0]
    assert taken.returncode == 2
    assert (
        f"the proxy did not start: port {busy} is already in use (the proxy): choose another "
        "port with --port (0: a free one); its last log lines:"
    ) in out

    taken = _cassette_proxy(
        "--port", "0", "--listeners", f"openai:{busy}", "--dir", str(cassettes), "--confdir", ca
    )
    out = taken.communicate(timeout=120)[0]
    assert taken.returncode == 2
    assert (
        f"the proxy did not start: port {busy} is already in use (openai): move that listener "
        "with --listeners openai:PORT"
    ) in out


def test_the_plugins_listeners_and_start_up_limit_are_its_options(pytester, held_ports):
    """``--cassette-listeners`` opens the listeners named, on the port given; a port in use is
    named with the option that moves it; ``--cassette-start-timeout`` is the limit a slow
    start-up (the test addon's ``running`` blocks 60 s) is stopped at."""
    port = _free_port()
    names = sorted(p.variable for p in providers.PROVIDERS)
    pytester.makepyfile(
        test_env=f"""
import os

def test_listeners():
    assert sorted(k for k in os.environ if k in {names}) == ["OPENAI_BASE_URL"]
    assert os.environ["OPENAI_BASE_URL"].startswith("http://127.0.0.1:{port}")
"""
    )
    common = ["-p", "no:cacheprovider", *UNUSED_PLUGINS, "--cassette-mode=replay"]
    common.append(f"--cassette-dir={pytester.path}")
    clean = {k: os.environ.pop(k) for k in names if k in os.environ}
    try:
        result = pytester.runpytest_subprocess(
            *common, f"--cassette-listeners=openai:{port}", timeout=120
        )
    finally:
        os.environ.update(clean)
    result.assert_outcomes(passed=1)

    busy = _hold(held_ports)
    result = pytester.runpytest_subprocess(
        *common, f"--cassette-listeners=openai:{busy}", timeout=120
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            f"*the proxy did not start: port {busy} is already in use (openai): move that "
            "listener with --cassette-listeners openai:PORT*"
        ]
    )

    result = pytester.runpytest_subprocess(
        *common,
        "--cassette-start-timeout=1",
        "--cassette-set",
        f"scripts={STARTUP}",
        "--cassette-set",
        "startup_delay=60",
        timeout=120,
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*the proxy did not start: the proxy did not start within 1 s (CASSETTE_START_TIMEOUT)*"]
    )


def test_which_listeners_open_is_chosen(tmp_path):
    cassettes = tmp_path / "c"
    cassettes.mkdir()
    names = sorted(p.variable for p in providers.PROVIDERS)
    show = f"import os; print(sorted(k for k in os.environ if k in {names}))"
    for choice, variables in (("openai", ["OPENAI_BASE_URL"]), ("none", [])):
        result = subprocess.run(
            [CASSETTE, "run", "--listeners", choice, "--dir", str(cassettes)]
            + ["--mode", "passthrough", "--", sys.executable, "-c", show],
            capture_output=True,
            text=True,
            timeout=120,
            env={k: v for k, v in os.environ.items() if k not in names},
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == str(variables)


def test_listener_choices_parse():
    assert providers.choose("all") == dict.fromkeys((p.name for p in providers.PROVIDERS), None)
    assert providers.choose("none") == {}
    assert providers.choose("openai:8081, anthropic") == {"openai": 8081, "anthropic": None}
    for bad in ("", "openai:x", "mistral", "openai:0"):
        with pytest.raises(ValueError):
            providers.choose(bad)


# -- the interfaces' spellings ------------------------------------------------------------------


def test_every_spelled_flag_exists_in_its_interface():
    """The flags hints and refusals name (runner/interface.py) are those of the CLI and the
    plugin."""
    plugin = (Path(interface.__file__).parents[1] / "pytest_plugin.py").read_text()
    for name, found in interface.INTERFACES.items():
        flags = [*found.flags.values(), found.set_flag]
        if name in ("run", "proxy"):
            help_text = CliRunner().invoke(main, [name, "--help"]).output
            assert all(flag in help_text for flag in flags), (name, flags)
        elif name == "pytest":
            assert all(f'"{flag}"' in plugin for flag in flags), flags
    assert interface.spell("pytest", "cassette_mode", "auto") == "--cassette-mode=auto"
    assert interface.spell("run", "cassette_mode", "auto") == "--mode auto"
    assert interface.spell("mitmdump", "cassette_mode", "auto") == "--set cassette_mode=auto"
    assert (
        interface.spell("pytest", "cassette_stale", "fail") == "--cassette-set cassette_stale=fail"
    )
