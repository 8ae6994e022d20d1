"""The two commands README.md promises: scripts/demo and the set-up both scripts share."""

from __future__ import annotations

import os
import shutil
import subprocess


def test_demo_streams_the_bundled_joke_through_the_proxy(checkout):
    result = subprocess.run(
        [str(checkout / "scripts" / "demo")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=checkout,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "> Tell me a joke\nWhy don't skeletons fight each other? \n\nThey don't have the guts!\n"
    )
    assert "cassette summary: 1 hits, 0 misses" in result.stderr


def test_setup_fails_clearly_without_python_312(tmp_path, checkout):
    """A machine with only Python 3.11: the set-up says what it needs and where it looked."""
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    for script in ("_python.sh", "_venv.sh", "test"):
        shutil.copy(checkout / "scripts" / script, project / "scripts")
    (project / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    old = fake_bin / "python3"
    old.write_text("#!/bin/sh\nexit 1\n")  # answers like a Python older than 3.12 would
    old.chmod(0o755)
    for tool in ("dirname", "ls", "sort", "sha256sum", "cut", "rm", "grep", "touch"):
        found = shutil.which(tool)
        if found:
            (fake_bin / tool).symlink_to(found)
    env = {"PATH": str(fake_bin), "HOME": str(tmp_path), "PYENV_ROOT": str(tmp_path / "none")}
    hardcoded = [
        p
        for p in (
            "/usr/local/bin/python3.13",
            "/usr/local/bin/python3.12",
            "/usr/bin/python3.13",
            "/usr/bin/python3.12",
        )
        if os.path.exists(p)
    ]
    result = subprocess.run(
        ["/bin/bash", str(project / "scripts" / "test")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if hardcoded:  # this machine has one where the script also looks: it must have found it
        assert "setting up .venv with" in result.stderr
        return
    assert result.returncode == 1
    assert "needs Python 3.12 or newer" in result.stderr
    assert "pyenv" in result.stderr
    assert not (project / ".venv").exists()
