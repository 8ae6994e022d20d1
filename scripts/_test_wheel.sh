# Sourced by scripts/test --wheel: the suite against the package as users install it.
#  1. the sdist and the wheel built from it (pypa build), and a wheel built straight from the
#     tree (pip wheel ., as `pip install git+…` does): the two must hold the same files;
#  2. that wheel with its test and lint extras installed into a new venv outside the checkout;
#  3. ruff check, ruff format --check and mypy on the checkout's source;
#  4. tests/ copied out of the checkout and run there by the venv's pytest, so they import the
#     installed package, never ./proxy_addon (CASSETTE_CHECKOUT names the checkout for the
#     tests that run its scripts, README and cassettes). Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/cassette-wheel.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cd "$ROOT"

step() { echo "test --wheel: ${SECONDS}s: $*" >&2; }
quietly() {  # run a command, showing its output only if it fails
    if ! "$@" > "$work/step.log" 2>&1; then
        grep -v "^WARNING: Location" "$work/step.log" >&2
        step "failed: $*"
        exit 1
    fi
}

source scripts/_python.sh
python="$(find_python)" || { step "no Python 3.12 or newer found"; exit 1; }
venv="$work/venv"
step "building the sdist and wheels; installing the wheel into $venv"
quietly "$python" -m venv "$venv"
quietly "$venv/bin/python" -m pip install --upgrade pip build
quietly "$venv/bin/python" -m build --outdir "$work/dist" .
quietly "$venv/bin/python" -m pip wheel --no-deps --wheel-dir "$work/from-tree" .
"$venv/bin/python" - "$work"/dist/*.whl "$work"/from-tree/*.whl <<'EOF'
"""The wheel built from the sdist and the one built from the tree hold the same files."""
import sys
import zipfile

from_sdist, from_tree = (set(zipfile.ZipFile(path).namelist()) for path in sys.argv[1:])
for name in sorted(from_sdist ^ from_tree):
    print(f"test --wheel: only in the wheel from the {'sdist' if name in from_sdist else 'tree'}: {name}")
sys.exit(from_sdist != from_tree)
EOF
wheel="$(ls "$work"/dist/*.whl)"
quietly "$venv/bin/python" -m pip install "$wheel[test,lint]"
modules="$("$venv/bin/python" -c "import sys, zipfile
print(sum(n.endswith('.py') for n in zipfile.ZipFile(sys.argv[1]).namelist()))" "$wheel")"
step "installed $(basename "$wheel"): $modules modules"

step "ruff check, ruff format --check, mypy"
"$venv/bin/ruff" check --quiet proxy_addon tests scripts
"$venv/bin/ruff" format --check --quiet proxy_addon tests scripts
"$venv/bin/mypy" --no-error-summary

mkdir "$work/suite"
cp -r tests "$work/suite/tests"
cp pyproject.toml "$work/suite/"  # pytest's settings: [tool.pytest.ini_options]
cd "$work/suite"
step "the suite from $work/suite, against the installed wheel"
CASSETTE_CHECKOUT="$ROOT" "$venv/bin/python" -m pytest -n 2 "$@"
