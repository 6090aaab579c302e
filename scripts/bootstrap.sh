#!/usr/bin/env bash
# Create .venv with a Python >= 3.12 found on this machine and install hydraguard (+ test and
# report extras).
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.hydraguard-installed
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then exit 0; fi
find_python() {
  local c
  for c in "${HYDRAGUARD_PYTHON:-}" python3.13 python3.12 python3; do
    [ -n "$c" ] || continue
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  local root
  root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
  for c in $(ls -d "$root"/versions/3.1[2-9]*/bin/python 2>/dev/null | sort -V -r); do
    if "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then echo "$c"; return 0; fi
  done
  return 1
}
py=$(find_python) || { echo "bootstrap: no Python >= 3.12 found (set HYDRAGUARD_PYTHON)" >&2; exit 1; }
echo "bootstrap: using $py ($("$py" -V))" >&2
[ -x .venv/bin/python ] || "$py" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e '.[test,report]'
touch "$stamp"
