#!/usr/bin/env bash
# Regenerates gen/ from proto/: the Python messages and gRPC stubs with the pinned grpcio-tools, their
# typed stubs (.pyi) with the pinned mypy-protobuf (see pyproject's dev extra), and the TypeScript
# client (gen/ts) with buf and the pinned protoc-gen-es (buf.gen.yaml; scripts/bootstrap.sh --dev).
# CI runs this and fails on any diff, so gen/ always matches the contracts.
set -euo pipefail
cd "$(dirname "$0")/.."
out=gen
bin=$(python -c 'import os, sys; print(os.path.dirname(sys.executable))')
for plugin in protoc-gen-mypy protoc-gen-mypy_grpc; do
  if [ ! -x "$bin/$plugin" ]; then
    echo "gen_protos: $bin/$plugin is missing: run scripts/bootstrap.sh --dev" >&2
    exit 1
  fi
done
tools=$PWD/.tools/node_modules/.bin
for tool in buf protoc-gen-es; do
  if [ ! -x "$tools/$tool" ]; then
    echo "gen_protos: $tools/$tool is missing: run scripts/bootstrap.sh --dev" >&2
    exit 1
  fi
done

find "$out/smoltbot/v1" -name '*_pb2*.py*' -delete 2>/dev/null || true
mkdir -p "$out/smoltbot/v1"
python -m grpc_tools.protoc -Iproto \
  --plugin=protoc-gen-mypy="$bin/protoc-gen-mypy" --plugin=protoc-gen-mypy_grpc="$bin/protoc-gen-mypy_grpc" \
  --python_out="$out" --grpc_python_out="$out" --mypy_out=quiet:"$out" --mypy_grpc_out=quiet:"$out" \
  proto/smoltbot/v1/*.proto
# Generated modules import each other as `smoltbot.v1.x_pb2`, which our
# package-dir mapping serves from gen/smoltbot/v1; py.typed lets type checkers read the stubs.
touch "$out/smoltbot/v1/__init__.py" "$out/smoltbot/v1/py.typed"

# TypeScript: buf.gen.yaml cleans gen/ts and writes one *_pb.ts per proto file.
PATH="$tools:$PATH" buf generate
