#!/usr/bin/env bash
# The commands of the README:
#   ./dev.sh demo   synthetic archive -> ingest -> train -> segment -> evaluate, embedded local Ray
#   ./dev.sh test   lint and format check (ruff), then the test suite
#   ./dev.sh bench  the benchmarks' tables (--quick: smoke run; see benchmarks/__main__.py)
# Each creates or refreshes the virtual environment first (idempotent; re-runs skip the install).
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

install() {
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  local stamp="$VENV/.raybird-installed"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$VENV/bin/pip" install --quiet --upgrade pip
    # torch first and pinned: with torch==2.13.0 present, the "torch" requirement of the
    # package is already met and pip does not fetch a multi-GB CUDA build.
    "$VENV/bin/pip" install --quiet torch==2.13.0
    "$VENV/bin/pip" install --quiet -e ".[test]"
    touch "$stamp"
  fi
}

case "${1:-}" in
  install) install ;;
  demo) install; shift; exec "$VENV/bin/raybird" demo "$@" ;;
  test) install; shift
    "$VENV/bin/ruff" check . && "$VENV/bin/ruff" format --check .   # lint and format (pyproject.toml)
    exec "$VENV/bin/python" -m pytest -q "$@" tests ;;
  bench) install; shift; exec "$VENV/bin/python" -m benchmarks "$@" ;;
  *) echo "usage: ./dev.sh {demo|test|bench|install} [args]" >&2; exit 2 ;;
esac
