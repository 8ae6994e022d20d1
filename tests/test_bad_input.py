"""Every bad input is a one-line error: no command prints a traceback, whatever its arguments
(hypothesis draws them from each command's options and from hostile values) and whatever the
cassette folder holds (hypothesis draws folders of broken, foreign and special files). The
commands run in-process (click's runner); exit codes stay 0, 1 or 2."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from proxy_addon.cli import main
from tests.conftest import FIXTURES, SEED

# The commands that only read or rewrite the folder (run and proxy start processes: their bad
# arguments are in tests/test_startup.py).
OPTIONS = {
    "ls": ["--grep", "--older-than", "--json"],
    "stale": ["--json"],
    "show": ["--raw"],
    "text": [],
    "verify": ["--redact-field", "--redact-header"],
    "scrub": ["--redact-field", "--redact-header"],
    "diff": ["--json", "--since"],
    "import-llama-stack": ["--redact-field", "--redact-header"],
    "export-llama-stack": ["--to", "--test-id"],
}
FLAGS = {"--json", "--raw"}
HOSTILE_VALUES = [
    "",
    "-",
    "--",
    "-1",
    "0",
    "30d",
    "99999999999d",
    "1e400d",
    "1.5.5d",
    "HEAD",
    "no-such-rev",
    "messages[-1]",
    "a[",
    "x" * 300,
    "\udcff\udcfe",  # bytes that are not UTF-8, as argv holds them
    "é",
    "NAME=VALUE",
    "%s",
    "{}",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cassette folder with a bit of everything: good files, broken ones, special ones."""
    d = tmp_path_factory.mktemp("bad-input") / "c"
    shutil.copytree(FIXTURES, d, ignore=shutil.ignore_patterns("*.txt"))
    shutil.copy(SEED, d / "seed.json")
    os.mkfifo(d / "fifo.json")
    (d / "zero.json").symlink_to("/dev/zero")
    (d / "broken.json").write_bytes(b'{"format": "llm-cassette", "version": 1, "request": ')
    imported = d.parent / "imported"
    CliRunner().invoke(main, ["import-llama-stack", str(SEED), "--dir", str(imported)])
    [ours] = imported.rglob("*.json")
    doc = orjson.loads(ours.read_bytes())
    doc["responses"][0]["recorded_at"] = "yesterday"
    (d / "dated.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    os.makedirs(os.path.join(os.fsencode(d), b"bad\xffname"))
    shutil.copy(SEED, os.path.join(os.fsencode(d), b"bad\xffname", b"x\xfe.json"))
    return d


def _paths(folder: Path) -> list[str]:
    return [
        str(folder),
        str(folder / "seed.json"),
        str(folder / "fifo.json"),
        str(folder / "zero.json"),
        str(folder / "broken.json"),
        str(folder / "nowhere"),
        os.fsdecode(os.path.join(os.fsencode(folder), b"bad\xffname", b"x\xfe.json")),
    ]


def _one_line_error(args: list[str], cwd: Path) -> None:
    """Run ``cassette ARGS``; it may fail, but as a command, never with a traceback."""
    previous = Path.cwd()
    os.chdir(cwd)  # export-llama-stack writes where --to says: a relative name lands here
    # The commands' warnings go to stderr as they would in a shell (logging's last resort),
    # not to pytest's log capture: a file name that is not UTF-8 in a captured record cannot
    # be sent from an xdist worker.
    ours = logging.getLogger("proxy_addon")
    ours.propagate = False
    try:
        result = CliRunner().invoke(main, args)
    finally:
        ours.propagate = True
        os.chdir(previous)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"cassette {args!r} raised:\n{result.output}") from result.exception
    assert result.exit_code in (0, 1, 2), (args, result.output)
    assert "Traceback" not in result.output, (args, result.output)


@st.composite
def arguments(draw: st.DrawFn, paths: list[str]) -> list[str]:
    command = draw(st.sampled_from(sorted(OPTIONS)))
    value = st.one_of(
        st.sampled_from(HOSTILE_VALUES + paths),
        st.text(st.characters(blacklist_characters="/\x00"), max_size=12),
    )
    args = [command]
    for _ in range(draw(st.integers(0, 4))):
        choice = draw(st.sampled_from(["option", "value", "dir"]))
        if choice == "option" and OPTIONS[command]:
            option = draw(st.sampled_from(OPTIONS[command] + ["--bogus"]))
            args += [option] if option in FLAGS else [option, draw(value)]
        elif choice == "dir":
            args += ["--dir", draw(st.sampled_from(paths))]
        else:
            args.append(draw(value))
    if "--dir" not in args:
        args += ["--dir", paths[0]]
    return args


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
@example(data=None)  # the known ones first
def test_no_command_prints_a_traceback_for_any_argument(data, folder, tmp_path):
    paths = _paths(folder)
    if data is None:
        for args in (
            ["ls", "--json", "--dir", paths[0]],  # a file name that is not UTF-8
            ["ls", "--grep", "x", "--dir", paths[0]],
            ["stale", "--json", "--dir", paths[0]],  # a directory name that is not UTF-8
            ["ls", "--older-than", "99999999999d", "--dir", paths[0]],
            ["show", "--raw", paths[3], "--dir", paths[0]],
            ["export-llama-stack", paths[2], "--to", "out", "--dir", paths[0]],
        ):
            _one_line_error(args, tmp_path)
        return
    _one_line_error(data.draw(arguments(paths)), tmp_path)


# -- hostile folders ---------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
SEED_DOC = orjson.loads(SEED.read_bytes())
KINDS = ["bytes", "json", "cassette", "fifo", "zero", "link-to-nothing", "dir", "socket", "sparse"]


@st.composite
def entries(draw: st.DrawFn) -> tuple[bytes, str, bytes]:
    """(a file name, its kind, its bytes): a name may hold bytes that are not UTF-8."""
    name = draw(
        st.binary(min_size=1, max_size=10).filter(lambda b: b"/" not in b and b"\0" not in b)
    )
    kind = draw(st.sampled_from(KINDS))
    if kind == "bytes":
        content = draw(st.binary(max_size=200))
    elif kind == "json":  # json, not orjson: it writes integers of any size
        content = json.dumps(draw(JSON_VALUES)).encode()
    else:  # a cassette with one field replaced by anything
        doc = orjson.loads(orjson.dumps(SEED_DOC))
        where = draw(st.sampled_from(["request", "response", "test_id", "__type__"]))
        doc[where] = draw(JSON_VALUES)
        content = json.dumps(doc, indent=2).encode()
    return name.lstrip(b".") + b".json" if name.strip(b".") else b"x.json", kind, content


def _make(folder: bytes, name: bytes, kind: str, content: bytes) -> None:
    path = os.path.join(folder, name)
    if os.path.lexists(path):
        return
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "zero":
        os.symlink(b"/dev/zero", path)
    elif kind == "link-to-nothing":
        os.symlink(os.path.join(folder, b"nowhere"), path)
    elif kind == "dir":
        os.mkdir(path)
        with open(os.path.join(path, b"inner.json"), "wb") as f:
            f.write(content)
    elif kind == "socket":
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(path)
    elif kind == "sparse":
        with open(path, "wb") as f:
            f.truncate(2 << 30)
    else:
        with open(path, "wb") as f:
            f.write(content)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(files=st.lists(entries(), min_size=1, max_size=5))
def test_no_command_prints_a_traceback_for_any_folder(files, tmp_path):
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        folder = os.path.join(os.fsencode(tmp), b"c")
        os.mkdir(folder)
        for name, kind, content in files:
            _make(folder, name, kind, content)
        where = os.fsdecode(folder)
        for args in (["ls"], ["ls", "--json"], ["stale", "--json"], ["verify"], ["scrub"]):
            _one_line_error([*args, "--dir", where], Path(tmp))


def test_verify_flags_a_recorded_at_that_is_not_a_time(folder):
    result = CliRunner().invoke(main, ["verify", "--dir", str(folder)])
    assert (
        f"{folder / 'dated.json'}: responses[0].recorded_at: 'yesterday' is not an ISO 8601 time"
    ) in result.output
    assert result.exit_code == 1
