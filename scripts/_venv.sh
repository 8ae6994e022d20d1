# Sourced by scripts/demo and scripts/test: make sure .venv exists, runs Python >= 3.12, and has
# the project installed (again when pyproject.toml changed). Prints what it does on stderr.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

source "$ROOT/scripts/_python.sh"

STAMP="$VENV/.installed-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
# A venv to make anew: none, too old, or left without pip by a venv module that failed half-way.
if [ ! -x "$VENV/bin/python" ] || ! is_new_enough "$VENV/bin/python" ||
        { [ ! -f "$STAMP" ] && ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; }; then
    if ! PY="$(find_python)"; then
        echo "error: this project needs Python 3.12 or newer (mitmproxy 12 does not run on older)." >&2
        echo "       Tried \$PYTHON, python3, python3.13, python3.12 and pyenv's versions in ${PYENV_ROOT:-$HOME/.pyenv}/versions." >&2
        echo "       Install one, or run with PYTHON=/path/to/python3.12." >&2
        exit 1
    fi
    echo "setting up .venv with $PY ($("$PY" --version 2>&1))" >&2
    rm -rf "$VENV"
    if ! "$PY" -m venv "$VENV" || ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
        rm -rf "$VENV"
        echo "error: $PY -m venv made no working venv with pip (on Debian or Ubuntu: apt install python3-venv)." >&2
        exit 1
    fi
fi

if [ ! -f "$STAMP" ]; then
    echo "installing the project into .venv (pip install -e '.[test,lint]')" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip 2>&1 | grep -v "^WARNING: Location" >&2 || true
    if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[test,lint]" 2> "$VENV/pip-install.log"; then
        grep -v "^WARNING: Location" "$VENV/pip-install.log" >&2
        echo "error: installing the project failed (log: $VENV/pip-install.log)" >&2
        exit 1
    fi
    rm -f "$VENV"/.installed-*
    touch "$STAMP"
fi
