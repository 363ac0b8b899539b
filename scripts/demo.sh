#!/usr/bin/env bash
# Set up a fresh machine and run the demo on the embedded default (DuckDB): simulate traffic, scan it,
# write the findings and the investigator report to ./demo-out (the README's first command).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
exec .venv/bin/distillguard demo --out demo-out "$@"
