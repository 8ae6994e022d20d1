"""Every guarantee has a mutant its test kills.

Each entry of ``scripts/mutants.toml`` is a small change to the production code (or to a file
users run: a README recipe, the pre-commit hook) that breaks one guarantee of the README on
purpose (``find`` is replaced by ``replace`` in ``file``; ``find`` must occur exactly once), and
the tests that must then fail. For each mutant this copies the package, the tests and what they
run or read (``COPIED``) into a temporary folder, applies the change there, and runs those tests
against the copy (``PYTHONPATH`` puts it first, for the test process and every ``mitmdump`` it
starts). A mutant is killed when its tests fail; one that survives, or whose tests cannot even
run, fails this script. The tests are first run once, unmutated, so a kill is never a test that
fails anyway.

    scripts/mutants                 # every mutant
    scripts/mutants --list          # the mutants and their guarantees
    scripts/mutants ID [ID ...]     # some of them
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CATALOGUE = ROOT / "scripts" / "mutants.toml"
# a checkout as the tests see it: the package, the tests, and what they run or read
COPIED = (
    "proxy_addon",
    "tests",
    "scripts",
    "cassettes",
    "pyproject.toml",
    "README.md",
    "LICENSE",
    ".pre-commit-hooks.yaml",
)


@dataclass(frozen=True)
class Change:
    file: str
    find: str
    replace: str


@dataclass(frozen=True)
class Mutant:
    id: str
    guarantee: str
    changes: tuple[Change, ...]  # one, or more where one guarantee has two defences
    tests: tuple[str, ...]


def catalogue(path: Path = CATALOGUE) -> list[Mutant]:
    doc = tomllib.loads(path.read_text())
    mutants = [
        Mutant(
            m["id"],
            m["guarantee"],
            tuple(Change(c["file"], c["find"], c["replace"]) for c in [m, *m.get("also", [])]),
            tuple(m["tests"]),
        )
        for m in doc["mutant"]
    ]
    ids = [m.id for m in mutants]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise SystemExit(f"mutants.toml: ids used twice: {', '.join(duplicates)}")
    return mutants


def copy_tree(target: Path) -> None:
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(
                source, target / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            shutil.copy2(source, target / name)


def apply(mutant: Mutant, tree: Path) -> None:
    for change in mutant.changes:
        path = tree / change.file
        text = path.read_text()
        count = text.count(change.find)
        if count != 1:
            raise SystemExit(
                f"mutant {mutant.id}: the text to replace occurs {count} times in {change.file} "
                "(it must occur exactly once: the code changed, update scripts/mutants.toml)"
            )
        path.write_text(text.replace(change.find, change.replace))


def run_tests(tree: Path, tests: tuple[str, ...]) -> tuple[int, str]:
    """pytest on ``tests`` in ``tree``, importing the package from there; (exit code, output)."""
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", "-rf", *tests],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
    )
    return result.returncode, result.stdout + result.stderr


def failed_tests(output: str) -> list[str]:
    return re.findall(r"^FAILED (\S+)", output, re.M)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ids", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    args = parser.parse_args()
    mutants = catalogue()
    if args.list:
        for m in mutants:
            print(f"{m.id:28} {m.guarantee}")
        return 0
    unknown = set(args.ids) - {m.id for m in mutants}
    if unknown:
        parser.error(f"unknown mutants: {', '.join(sorted(unknown))}")
    chosen = [m for m in mutants if not args.ids or m.id in args.ids]
    with tempfile.TemporaryDirectory(prefix="cassette-mutants-") as tmp:
        clean = Path(tmp) / "clean"
        copy_tree(clean)
        tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
        code, output = run_tests(clean, tests)
        if code != 0:
            print(output[-4000:])
            print("mutants: the tests fail without any mutant: fix them first", file=sys.stderr)
            return 1
        survived = []
        for n, mutant in enumerate(chosen, 1):
            tree = Path(tmp) / f"m{n}"
            copy_tree(tree)
            apply(mutant, tree)
            started = time.monotonic()
            code, output = run_tests(tree, mutant.tests)
            took = time.monotonic() - started
            killed_by = failed_tests(output)
            if code == 1 and killed_by:
                verdict = f"killed by {', '.join(t.split('::')[-1] for t in killed_by)}"
            elif code == 0:
                verdict = "SURVIVED"
                survived.append(mutant.id)
            else:
                verdict = f"ERROR (pytest exit {code}): the tests did not run"
                survived.append(mutant.id)
                print(output[-3000:])
            print(f"{mutant.id:28} {took:6.1f} s  {verdict}", flush=True)
            shutil.rmtree(tree, ignore_errors=True)
    print(f"mutants: {len(chosen) - len(survived)} of {len(chosen)} killed")
    if survived:
        print(f"mutants: not killed: {', '.join(survived)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
