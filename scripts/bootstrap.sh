#!/usr/bin/env bash
# Installs what smoltbot needs into .venv (idempotent). Usage: scripts/bootstrap.sh [--dev]
# --dev adds the test tools: pytest & co, buf (npm), and Debian's chromium for browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0
[ "${1:-}" = "--dev" ] && dev=1

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if [ "$dev" = 1 ]; then
  .venv/bin/python -m pip install --quiet -e '.[dev]'
else
  .venv/bin/python -m pip install --quiet -e .
fi

if [ "$dev" = 1 ]; then
  # buf (lint/format/breaking for proto/) from npm, pinned, installed inside the repo.
  if [ ! -x .tools/node_modules/.bin/buf ]; then
    npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@1.75.0 >/dev/null
  fi
  # Browser tests drive Debian's chromium (playwright cannot download its own here).
  if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq >/dev/null
      apt-get install -y -qq chromium >/dev/null
    else
      echo "bootstrap: chromium is missing; install it with: sudo apt-get install chromium" >&2
      exit 1
    fi
  fi
fi
