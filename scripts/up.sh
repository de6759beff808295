#!/usr/bin/env bash
# Installs smoltbot into .venv and runs the whole stack on the embedded default (SQLite in
# ~/.smoltbot). Extra arguments go to `smoltbot up` (see `smoltbot up --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/smoltbot up "$@"
