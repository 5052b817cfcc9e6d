#!/usr/bin/env bash
# The main job on the embedded default (SQLite, local files, the bundled model):
# ingest the bundled sample photos, score them, then open the web app.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DOOHABLE_HOME=${DOOHABLE_HOME:-.doohable}
D=.venv/bin/doohable
$D init
$D demo "$@"
