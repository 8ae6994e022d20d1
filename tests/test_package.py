"""The package as users install it. .ci/run installs the wheel into a venv of its own and runs
these tests from a copy outside the checkout: then the tests import the installed package and
not ./proxy_addon, every module of the checkout is in it, the command works from any folder,
and its pytest plugin stays out of pytest runs that do not ask for it. (scripts/test runs them
too, against the checkout's editable install.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import proxy_addon
from tests.conftest import CASSETTE, ROOT, TESTS, TESTS_COPIED_OUT, counted

PACKAGE = Path(proxy_addon.__file__).resolve().parent
BIN = Path(sys.executable).parent


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without the outer pytest's own variables (xdist's worker names)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return {**env, **extra}


def test_the_tests_import_the_package_under_test_not_the_checkouts_source():
    if TESTS_COPIED_OUT:  # .ci/run: the wheel, installed in this venv's site-packages
        assert not PACKAGE.is_relative_to(ROOT), f"{PACKAGE} is the checkout's source"
        assert not PACKAGE.is_relative_to(TESTS.parent), f"{PACKAGE} sits beside the tests"
        assert PACKAGE.parent == Path(sysconfig.get_path("purelib")).resolve()
    else:  # scripts/test: the checkout's own, installed editable
        assert PACKAGE == ROOT / "proxy_addon"


def test_every_module_of_the_checkout_imports_from_the_package(checkout, tmp_path):
    """Imported by a fresh interpreter in an empty folder: a module the wheel left out fails."""
    names = sorted(
        ".".join(path.relative_to(checkout).with_suffix("").parts).removesuffix(".__init__")
        for path in (checkout / "proxy_addon").rglob("*.py")
    )
    assert len(names) > 50 and "proxy_addon.mitm.options" in names
    code = """
import importlib, json, sys
found = {}
for name in sys.argv[1:]:
    try:
        found[name] = importlib.import_module(name).__file__
    except ImportError as e:
        found[name] = f"cannot import: {e}"
print(json.dumps(found))
"""
    result = subprocess.run(
        [sys.executable, "-c", code, *names],
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    files = json.loads(result.stdout)
    missing = {name: file for name, file in files.items() if file.startswith("cannot import")}
    assert not missing, f"modules of the checkout that {PACKAGE} lacks: {missing}"
    for name, file in files.items():
        inside = name.split(".")[1:]  # proxy_addon.mitm.options: mitm/options.py
        assert Path(file).resolve() in (
            PACKAGE.joinpath(*inside, "__init__.py"),
            PACKAGE.joinpath(*inside).with_suffix(".py"),
        ), f"{name} came from {file}, not from {PACKAGE}"


def test_version_and_a_replay_of_the_bundled_joke_from_a_folder_outside_the_checkout(
    checkout, tmp_path
):
    """The issue's "done when": the installed command, run from any folder, replays the
    bundled joke to the openai client of scripts/demo_client.py."""
    mitmdump = subprocess.run(
        [str(BIN / "mitmdump"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    mitmproxy_version = re.search(r"^Mitmproxy: (\S+)", mitmdump, re.M)
    python_version = re.search(r"^Python: +(\S+)", mitmdump, re.M)
    assert mitmproxy_version and python_version, mitmdump
    version = tomllib.loads((checkout / "pyproject.toml").read_text())["project"]["version"]
    expected = (
        f"cassette {version} from {PACKAGE} "
        f"(mitmproxy {mitmproxy_version[1]}, Python {python_version[1]})\n"
    )
    for flag in ("--version", "-V"):
        shown = subprocess.run(
            [CASSETTE, flag], cwd=tmp_path, env=_clean_env(), capture_output=True, text=True
        )
        assert (shown.returncode, shown.stdout) == (0, expected), shown.stderr

    shutil.copytree(checkout / "cassettes", tmp_path / "copy")
    shutil.copy(checkout / "scripts" / "demo_client.py", tmp_path / "client.py")
    replay = subprocess.run(
        [CASSETTE, "run", "--mode", "replay", "--dir", "copy", "--", sys.executable, "client.py"],
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert replay.returncode == 0, replay.stderr
    assert replay.stdout.endswith(
        "Why don't skeletons fight each other? \n\nThey don't have the guts!\n"
    )
    assert counted(replay.stderr, "hits", "misses") == (1, 0)


def test_addon_path_names_the_addon_beside_its_mitmdump(tmp_path):
    """The path for `mitmdump -s`; a note on stderr (not in `$(...)`) when the mitmdump on
    PATH is not the one installed with the package, which alone can import the addon."""
    beside = subprocess.run(
        [CASSETTE, "addon-path"],
        cwd=tmp_path,
        env=_clean_env(PATH=os.pathsep.join([str(BIN), "/usr/bin", "/bin"])),
        capture_output=True,
        text=True,
    )
    assert (beside.returncode, beside.stdout, beside.stderr) == (0, f"{PACKAGE}/addon.py\n", "")
    assert (PACKAGE / "addon.py").read_text().count("make_addons()") == 1
    elsewhere = subprocess.run(
        [CASSETTE, "addon-path"],
        cwd=tmp_path,
        env=_clean_env(PATH="/usr/bin:/bin"),
        capture_output=True,
        text=True,
    )
    assert elsewhere.stdout == beside.stdout
    assert f"the mitmdump installed with this package, {BIN / 'mitmdump'}" in elsewhere.stderr


# The scratch project's conftest: which modules the pytest process holds at its end.
_LIST_MODULES = """
import sys


def pytest_sessionfinish(session):
    with open("modules.json", "w") as f:
        f.write(repr(sorted(sys.modules)).replace("'", '"'))
"""


def test_the_plugin_leaves_a_pytest_run_that_does_not_use_it_as_it_was(tmp_path):
    """An unrelated project with one trivial test, run with the package installed and with
    its plugin blocked (`-p no:cassette`, as if it were not installed): the same output and
    exit code; the plugin's entry point imports no module of the package but itself and
    `proxy_addon.summary` (the mode names), and nothing heavy (mitmproxy, httpx, click)."""
    (tmp_path / "conftest.py").write_text(_LIST_MODULES)
    (tmp_path / "test_trivial.py").write_text("def test_trivial():\n    assert 1 + 1 == 2\n")

    def pytest(*args: str) -> tuple[int, str, set[str]]:
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", *args],
            cwd=tmp_path,
            env=_clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        output = re.sub(r" in [\d.]+s", " in Ts", result.stdout + result.stderr)
        return result.returncode, output, set(json.loads((tmp_path / "modules.json").read_text()))

    with_plugin = pytest()
    without = pytest("-p", "no:cassette")
    assert with_plugin[:2] == without[:2]
    assert with_plugin[0] == 0 and with_plugin[1].endswith("\n1 passed in Ts\n"), with_plugin[1]
    ours = {m for m in with_plugin[2] if m.split(".")[0] == "proxy_addon"}
    assert ours == {"proxy_addon", "proxy_addon.pytest_plugin", "proxy_addon.summary"}
    assert not {m for m in without[2] if m.split(".")[0] == "proxy_addon"}
    added = {m.split(".")[0] for m in with_plugin[2] - without[2]}
    assert added <= {"proxy_addon", "orjson"}, added
