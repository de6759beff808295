"""docs/grpc-api.md is generated from the protos; it must not drift from them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_grpc_docs", ROOT / "scripts" / "gen_grpc_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_grpc_docs", module)
    spec.loader.exec_module(module)
    return module


def test_grpc_reference_is_up_to_date() -> None:
    expected = generator().render()
    actual = (ROOT / "docs" / "grpc-api.md").read_text()
    assert actual == expected, "docs/grpc-api.md is stale: run python scripts/gen_grpc_docs.py"


def test_every_rpc_and_message_is_in_the_reference() -> None:
    from smoltbot.v1 import observer_service_pb2, registry_service_pb2

    text = (ROOT / "docs" / "grpc-api.md").read_text()
    for module in (registry_service_pb2, observer_service_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                assert f"| `{method.name}` |" in text
                assert f"### {method.input_type.name}\n" in text
                assert f"### {method.output_type.name}\n" in text
