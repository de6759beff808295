#!/usr/bin/env bash
# Regenerates gen/ from proto/ with the pinned grpcio-tools (see pyproject's dev extra).
# CI runs this and fails on any diff, so gen/ always matches the contracts.
set -euo pipefail
cd "$(dirname "$0")/.."
out=gen
find "$out/smoltbot/v1" -name '*_pb2*.py*' -delete 2>/dev/null || true
mkdir -p "$out/smoltbot/v1"
python -m grpc_tools.protoc -Iproto \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  proto/smoltbot/v1/*.proto
# Generated modules import each other as `smoltbot.v1.x_pb2`, which our
# package-dir mapping serves from gen/smoltbot/v1.
touch "$out/smoltbot/v1/__init__.py"
