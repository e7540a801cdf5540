#!/usr/bin/env bash
# Sourced by scripts/serve.sh and scripts/test.sh: make sure the venv, the Python
# dependencies and SoftHSM2 are there, installing what is missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${JSD_VENV:-$ROOT/.venv}"

find_python() {
    for py in python3.13 python3.12 python3.11 python3; do
        if command -v "$py" >/dev/null 2>&1 &&
            "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$py"; return 0
        fi
    done
    return 1
}

find_softhsm() {
    for so in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
              /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so /usr/local/lib/softhsm/libsofthsm2.so; do
        [ -f "$so" ] && { echo "$so"; return 0; }
    done
    return 1
}

if ! find_softhsm >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "bootstrap: installing softhsm2 with apt-get" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2 >/dev/null
    else
        echo "bootstrap: SoftHSM2 is missing. Install it, then run this again:" >&2
        echo "    sudo apt-get install -y softhsm2" >&2
        exit 1
    fi
fi
# The console's browser tests drive Debian's chromium (Playwright's own browser download is never used).
if [ "${JSD_NO_CHROMIUM:-}" = "" ] && [ "$(basename "$0")" = "test.sh" ] && [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "bootstrap: installing chromium with apt-get (for tests/ui)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "bootstrap: chromium is missing (tests/ui need it); install it with:" >&2
        echo "    sudo apt-get install -y chromium" >&2
    fi
fi
# Where SoftHSM2 is, for the embedded default (not hsm.module: setting that would mean "a real HSM").
export JSD_SOFTHSM_LIBRARY="$(find_softhsm)"

PY="$(find_python)" || { echo "bootstrap: Python 3.11+ is needed (sudo apt-get install -y python3 python3-venv)" >&2; exit 1; }
if [ ! -x "$VENV/bin/python" ]; then
    echo "bootstrap: creating $VENV" >&2
    "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.jsd-installed"
WANT="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    echo "bootstrap: installing Python dependencies into $VENV" >&2
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$VENV/bin/python" -m pip install -q -e "$ROOT[test]"
    echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
