#!/usr/bin/env bash
# Installs everything the tests need, then runs the whole suite (PostgreSQL is started by
# the tests themselves from the machine's initdb/pg_ctl). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --dev
export PATH="$PWD/.tools/node_modules/.bin:$PATH"
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
status=$?
set -e
# pytest exits 5 when it collected nothing; that must not pass as green.
exit "$status"
