#!/usr/bin/env bash
# Installs what smoltbot needs into .venv (idempotent). Usage: scripts/bootstrap.sh [--dev]
# --dev adds the test tools: pytest & co, mypy, buf and the TypeScript client's tools (npm), and
# Debian's chromium for browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0
[ "${1:-}" = "--dev" ] && dev=1

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  # Only a new venv needs a newer pip (PEP 660 editable installs); upgrading on every run would
  # ask the package index each time for nothing.
  .venv/bin/python -m pip install --quiet --upgrade pip
fi

# The editable install is setuptools' strict mode: build/__editable__.smoltbot-*/smoltbot/ is a tree
# of links to the real files, put on sys.path by a plain .pth. ruff, mypy, pyright and IDEs see
# `smoltbot.core` there; the default mode would serve it through an import hook none of them runs.
# A link tree only holds the files that existed at install time, so the install is redone whenever
# the list of files (or pyproject.toml) changes, and skipped otherwise.
stamp=.venv/.smoltbot-install
fingerprint=$(
  {
    cat pyproject.toml
    find core registry observer gateway api cli gen/smoltbot/v1 -name __pycache__ -prune -o -type f -print \
      | LC_ALL=C sort
  } | sha256sum | cut -d' ' -f1
)
read -r installed_fingerprint installed_dev 2>/dev/null < "$stamp" || true
if [ "${installed_fingerprint:-}" != "$fingerprint" ] || [ "${installed_dev:-0}" -lt "$dev" ] \
    || ! compgen -G 'build/__editable__.smoltbot-*/smoltbot/core/__init__.py' >/dev/null; then
  target=.
  [ "$dev" = 1 ] && target='.[dev]'
  .venv/bin/python -m pip install --quiet --config-settings editable_mode=strict -e "$target"
  echo "$fingerprint $dev" > "$stamp"
fi

if [ "$dev" = 1 ]; then
  # buf (lint/format/breaking/generate for proto/) and the TypeScript client's code generator,
  # runtime and compiler, from npm, pinned, installed inside the repo (.tools/, git-ignored).
  npm_packages=(
    @bufbuild/buf@1.75.0
    @bufbuild/protoc-gen-es@2.17.0
    @bufbuild/protobuf@2.17.0
    @connectrpc/connect@2.1.1  # connect-node 2.2+ needs Node 22; Node here is 20
    @connectrpc/connect-node@2.1.1
    typescript@5.9.3
    @types/node@20.19.43
  )
  # shellcheck disable=SC2016
  missing=$(node -e '
    for (const spec of process.argv.slice(1)) {
      const at = spec.lastIndexOf("@");
      let version = "";
      try { version = require(`${process.cwd()}/.tools/node_modules/${spec.slice(0, at)}/package.json`).version; } catch {}
      if (version !== spec.slice(at + 1)) console.log(spec);
    }' "${npm_packages[@]}")
  if [ -n "$missing" ]; then
    npm install --silent --no-audit --no-fund --save-exact --prefix .tools "${npm_packages[@]}" >/dev/null
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
