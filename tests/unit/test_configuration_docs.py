"""docs/configuration.md is generated from the Settings and CliSettings classes; it must not drift from
them, and every SMOLTBOT_ variable the code names must be in it."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

from smoltbot.core.settings import CliSettings, Settings

ROOT = Path(__file__).resolve().parents[2]


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config_docs", ROOT / "scripts" / "gen_config_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_config_docs", module)
    spec.loader.exec_module(module)
    return module


def test_configuration_reference_is_up_to_date() -> None:
    expected = generator().render()
    actual = (ROOT / "docs" / "configuration.md").read_text()
    assert actual == expected, "docs/configuration.md is stale: run python scripts/gen_config_docs.py"


def test_every_setting_is_documented_with_a_description() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    for name, info in Settings.model_fields.items():
        assert info.description, f"Settings.{name} has no description"
        assert f"| `SMOLTBOT_{name.upper()}` |" in text


def test_every_command_line_setting_is_documented_with_a_description() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    for name, info in CliSettings.model_fields.items():
        assert info.description, f"CliSettings.{name} has no description"
        assert f"| `SMOLTBOT_{name.upper()}` |" in text


#: Folders of product code: what a user or operator can meet.
_PRODUCT = ("api", "cli", "core", "gateway", "observer", "registry", "scripts")
_VARIABLE = re.compile(r"SMOLTBOT_[A-Z][A-Z0-9_]*")


def variables_named_in_code() -> dict[str, str]:
    """Every SMOLTBOT_ name in a string of the product code (variables read, or named in a message
    or an option's help) -> a file that names it. Identifiers (an enum member) are not variables."""
    found: dict[str, str] = {}
    for folder in _PRODUCT:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    for name in _VARIABLE.findall(node.value):
                        found.setdefault(name, str(path.relative_to(ROOT)))
    return found


def test_every_smoltbot_variable_the_code_names_is_documented() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    named = variables_named_in_code()
    assert {"SMOLTBOT_API_URL", "SMOLTBOT_GATEWAY_URL", "SMOLTBOT_DEBUG", "SMOLTBOT_HOME"} <= set(named)
    missing = {name: where for name, where in named.items() if f"| `{name}` |" not in text}
    assert not missing, f"named in the code but not in docs/configuration.md: {missing}"
