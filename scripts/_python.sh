# Sourced by scripts/_venv.sh and .ci/run: find_python prints a Python 3.12 or newer (mitmproxy 12
# needs it): $PYTHON, python3, python3.13, ..., pyenv's versions, the usual system paths.
is_new_enough() {  # a working interpreter at 3.12 or newer (pyenv shims that fail are skipped)
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1
}

find_python() {
    local candidates=()
    [ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
    candidates+=(python3 python3.13 python3.12 python3.14)
    local home_pyenv="${PYENV_ROOT:-$HOME/.pyenv}"
    # pyenv's versions directly: its shims refuse a version that is not selected
    for d in $(ls -d "$home_pyenv"/versions/3.1[2-9]* 2>/dev/null | sort -rV); do
        candidates+=("$d/bin/python3")
    done
    candidates+=(/usr/local/bin/python3.13 /usr/local/bin/python3.12 /usr/bin/python3.13 /usr/bin/python3.12)
    for c in "${candidates[@]}"; do
        if command -v "$c" >/dev/null 2>&1 && is_new_enough "$c"; then
            command -v "$c"
            return 0
        fi
    done
    return 1
}
