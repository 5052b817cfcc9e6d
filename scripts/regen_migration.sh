#!/usr/bin/env bash
# Development helper (before the first release only): regenerate the initial Alembic
# revision 0001 from doohable/store/models.py. After a release, add new revisions instead.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
rm -f src/doohable/store/migrations/versions/0001_*.py
.venv/bin/python - "$tmp" <<'PY'
import sys
from alembic import command
from doohable.store.db import alembic_config, make_engine
engine = make_engine(f"sqlite:///{sys.argv[1]}/m.db")
cfg = alembic_config(engine)
with engine.begin() as conn:
    cfg.attributes["connection"] = conn
    command.revision(cfg, message="initial schema", autogenerate=True, rev_id="0001")
PY
rm -rf "$tmp"
.venv/bin/ruff format -q src/doohable/store/migrations/versions/ || true
echo "regenerated src/doohable/store/migrations/versions/0001_initial_schema.py"
