"""The contracts serve other languages in fact: the TypeScript client generated from proto/ (gen/ts)
calls the real Registry and Observer over gRPC.

The TypeScript side is `client.test.ts`, compiled with the pinned `tsc` (strict, so a client that no
longer type-checks against gen/ts fails here too) and run with `node --test` against the services of
the API tests' `stack` fixture; the addresses, the seeded agent and its traces go in the environment.
Node and the npm packages come from scripts/bootstrap.sh --dev (.tools/).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from smoltbot.core.service_auth import SERVICE_CREDENTIAL_METADATA
from smoltbot.core.tls import TlsConfig
from tests.integration.api.conftest import api, stack  # noqa: F401 - fixtures used below
from tests.integration.api.helpers import Stack, hash_of, seed_agent

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
NODE_MODULES = ROOT / ".tools" / "node_modules"


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    # One backend is enough: this proves the contract in another language, not the storage.
    return f"sqlite:///{tmp_path / 'db' / 'smoltbot.db'}"


@pytest.fixture(scope="module")
def compiled_test(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """client.test.ts and gen/ts compiled to JavaScript in a scratch dir that sees .tools/node_modules."""
    tsc = NODE_MODULES / ".bin" / "tsc"
    if not tsc.exists() or shutil.which("node") is None:
        pytest.fail("node or the TypeScript tools are missing: run scripts/bootstrap.sh --dev")
    work = tmp_path_factory.mktemp("ts-client")
    (work / "node_modules").symlink_to(NODE_MODULES, target_is_directory=True)
    (work / "package.json").write_text('{"type": "module"}\n')
    shutil.copytree(ROOT / "gen" / "ts", work / "gen" / "ts")
    for name in ("client.test.ts", "tsconfig.json"):
        shutil.copy(HERE / name, work / name)
    compiled = subprocess.run([str(tsc), "-p", str(work)], capture_output=True, text=True, timeout=120)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    return work / "out" / "client.test.js"


async def test_the_generated_typescript_client_resolves_agents_and_lists_traces(
    api: httpx.AsyncClient, stack: Stack, compiled_test: Path  # noqa: F811 - the imported fixtures
) -> None:
    seeded = await seed_agent(api, stack)
    credential = TlsConfig.from_settings(stack.settings).credential
    assert credential is not None
    env = {
        **os.environ,
        "SMOLTBOT_TEST_REGISTRY_ADDRESS": stack.registry_address,
        "SMOLTBOT_TEST_OBSERVER_ADDRESS": stack.observer_address,
        "SMOLTBOT_TEST_SERVICE_CREDENTIAL_METADATA": SERVICE_CREDENTIAL_METADATA,
        "SMOLTBOT_TEST_SERVICE_CREDENTIAL": credential.value.decode(),
        "SMOLTBOT_TEST_AGENT_HASH": hash_of(stack, seeded.credential),
        "SMOLTBOT_TEST_AGENT_ID": seeded.agent_id,
        "SMOLTBOT_TEST_TRACE_IDS": json.dumps([trace["trace_id"] for trace in seeded.traces]),
    }
    # The services run on this event loop: node runs beside it, never blocking it.
    node = await asyncio.create_subprocess_exec(
        "node", "--test", str(compiled_test), cwd=compiled_test.parent, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(node.communicate(), timeout=90)
    report = output.decode(errors="replace")
    assert node.returncode == 0, report
    assert "# pass 4" in report and "# fail 0" in report, report
