"""The cassette folder is walked safely, by the proxy and by every command: a FIFO, a link to
/dev/zero, a socket, a link to nothing and a sparse 2 GB file named ``*.json`` beside a good
recording. Before, the proxy never started listening and ``ls``, ``verify``, ``scrub`` hung on
the FIFO; ``verify``, ``show``, ``scrub`` read the 2 GB file whole."""

from __future__ import annotations

import os
import resource
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from proxy_addon import formats
from proxy_addon.model import CassetteError
from tests.conftest import CASSETTE, SEED, counted

MEMORY_LIMIT = 512 << 20  # address space for a command: a 2 GB file read whole cannot fit


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    d = tmp_path / "c"
    (d / "api").mkdir(parents=True)
    shutil.copy(SEED, d / "ok.json")
    os.mkfifo(d / "fifo.json")
    (d / "zero.json").symlink_to("/dev/zero")
    (d / "broken.json").symlink_to(tmp_path / "nowhere")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(d / "sock.json"))  # the socket file stays once closed
    with open(d / "api" / "huge.json", "wb") as f:
        f.truncate(2 << 30)  # sparse: 2 GB long, no block written
    return d


SKIPPED = {
    "fifo.json": "it is a FIFO",
    "zero.json": "it is a character device",
    "broken.json": "it is a link to nothing",
    "sock.json": "it is a socket",
}


def test_the_proxy_starts_over_a_hostile_folder_and_names_what_it_skipped(hostile, proxies):
    proxy = proxies(hostile, "replay")  # waits until it is ready: it started
    peak = proxy.peak_rss_mb()
    log = proxy.stop()
    for name, what in SKIPPED.items():
        assert f"skipping {hostile / name}: {what}, not a regular file" in log
    assert f"{hostile / 'api' / 'huge.json'}" in log and "too large (2048.0 MB" in log
    assert counted(log, "recordings") == (1,)  # the good one
    assert peak < 1024  # MB: the 2 GB file was not read


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


COMMANDS = [
    (["ls"], 0, "too large (2048.0 MB"),
    (["ls", "--json"], 0, "too large (2048.0 MB"),
    (["stale"], 0, "too large (2048.0 MB"),
    (["verify"], 1, "huge.json: too large (2048.0 MB"),
    (["scrub"], 1, "huge.json: skipped: too large (2048.0 MB"),
    (["show", "{dir}/api/huge.json"], 1, "too large (2048.0 MB"),
    (["text", "{dir}/api/huge.json"], 1, "too large (2048.0 MB"),
    (["show", "{dir}/fifo.json"], 2, "no cassette file or key prefix"),
    (["import-llama-stack", "{dir}/api/huge.json"], 1, "too large (2048.0 MB"),
]


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [pytest.param(*c, id=" ".join(c[0]).replace("{dir}/", "")) for c in COMMANDS],
)
def test_every_command_ends_over_a_hostile_folder_within_a_memory_limit(args, code, says, hostile):
    result = subprocess.run(
        [CASSETTE, *(a.format(dir=hostile) for a in args), "--dir", str(hostile)],
        capture_output=True,
        text=True,
        timeout=120,  # hangs, if anything: before, the FIFO never let go
        preexec_fn=_limited,
    )
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    assert says in output
    assert "Traceback" not in output
    if args[0] in ("ls", "stale", "verify", "scrub"):
        for name, what in SKIPPED.items():
            assert f"skipping {hostile / name}: {what}" in output


def test_a_fifo_or_a_device_in_a_files_place_is_refused_without_blocking(hostile):
    """What the walk let through can change before it is opened: the reader checks the file it
    opened, and opening never waits for a FIFO's writer."""
    errors: list[str] = []

    def read(path: Path) -> None:
        try:
            formats.read_bytes(path)
        except CassetteError as e:
            errors.append(e.reason)

    for name in ("fifo.json", "zero.json"):
        reader = threading.Thread(target=read, args=(hostile / name,), daemon=True)
        reader.start()
        reader.join(30)
        assert not reader.is_alive(), f"reading {name} blocked"
    assert errors == ["not a regular file (a FIFO, a device or a socket)"] * 2


@pytest.mark.parametrize(
    "args",
    [
        ["explain", "{fifo}", "--dir", "{dir}"],
        ["show", "{fifo}", "--dir", "{dir}"],
        ["text", "{fifo}", "--dir", "{dir}"],
        ["diff", "{fifo}", "{ok}", "--dir", "{dir}"],
        ["run", "--prices", "{fifo}", "--", "true"],
        ["proxy", "--prices", "{fifo}"],
    ],
    ids=lambda args: " ".join(a for a in args if not a.startswith(("{", "--dir")))[:30],
)
def test_a_fifo_named_as_a_commands_file_is_refused_in_one_line(args, hostile):
    """A file the user names (a request to explain, a recording, a price file) may be a FIFO:
    the command says so and ends; it never waits for a writer (``explain`` and ``--prices``
    opened it with a plain ``open`` and hung)."""
    given = [
        a.format(fifo=hostile / "fifo.json", ok=hostile / "ok.json", dir=hostile) for a in args
    ]
    result = subprocess.run(
        [CASSETTE, *given], capture_output=True, text=True, timeout=30, cwd=hostile.parent
    )
    assert result.returncode in (1, 2), result.stderr
    assert "not a regular file" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
