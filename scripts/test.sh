#!/usr/bin/env bash
# Set up and run the whole test suite (lint, types, tests on SQLite and PostgreSQL,
# browser tests in Debian's chromium). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
if ! command -v chromium >/dev/null 2>&1; then
  echo "installing Debian's chromium for the browser tests" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi
export DOOHABLE_TEST_POSTGRES_URL=${DOOHABLE_TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/test}
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
