"""The deployment files, checked offline.

* Kubernetes manifests (deploy/k8s) against the Kubernetes JSON schemas bundled in
  `kubernetes-validate` (strict: unknown fields fail), for the oldest and newest versions
  we support, plus what the schemas cannot see: every service has its Deployment and Service,
  gRPC probes on the health port, /health readiness, non-root, and settings that exist.
* deploy/compose.yaml (and the TLS overlay) against the Compose Specification schema that
  `check-jsonschema` vendors, plus its references: services, ports, volumes, settings.
* deploy/Dockerfile statically: multi-stage, non-root, `smoltbot` entrypoint, every package
  of pyproject.toml copied in. It is not built here (no Docker engine); docs/self-hosting.md
  says so.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from smoltbot.core.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
#: Oldest Kubernetes we claim (grpc probes are GA since 1.27), and the newest schemas bundled.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
SERVICES = ("registry", "observer", "gateway", "api")
GRPC_SERVICES = {"registry": 50051, "observer": 50052}
HTTP_SERVICES = {"gateway": 8080, "api": 8000}
SETTINGS_VARIABLES = {f"SMOLTBOT_{name.upper()}" for name in Settings.model_fields}

pytestmark = pytest.mark.timeout(60)


def manifest_files() -> list[Path]:
    return sorted(path for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def all_resources() -> list[dict[str, Any]]:
    return [
        doc for path in manifest_files() if path.name != "secrets.example.yaml" for doc in documents(path)
    ]


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in all_resources() if doc["kind"] == kind}


# --------------------------------------------------------------------------- Kubernetes


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=lambda path: path.name)
def test_every_manifest_matches_the_kubernetes_schemas(path: Path, version: str) -> None:
    docs = documents(path)
    assert docs, f"{path.name} has no resources"
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = ".".join(str(part) for part in error.path)
            pytest.fail(f"{path.name}: {doc['kind']}/{doc['metadata']['name']} at {where}: {error.message}")


def test_the_validator_is_strict_and_offline() -> None:
    """A misspelt field must fail: otherwise the test above proves nothing."""
    deployment = json.loads(json.dumps(by_kind("Deployment")["gateway"]))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {path.name for path in manifest_files()} - {"secrets.example.yaml"}
    assert listed == on_disk


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_the_kustomize_build_matches_the_schemas() -> None:
    rendered = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=30,
                              check=False)
    if rendered.returncode != 0:
        pytest.skip(f"kubectl kustomize unavailable here: {rendered.stderr.strip()[:200]}")
    docs = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
    assert len(docs) == len(all_resources())
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "smoltbot"


def container_of(name: str) -> dict[str, Any]:
    containers = by_kind("Deployment")[name]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_one_deployment_and_one_service_per_service() -> None:
    deployments, services = by_kind("Deployment"), by_kind("Service")
    assert set(deployments) == set(SERVICES)
    assert set(services) == set(SERVICES)
    for name in SERVICES:
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        selector = services[name]["spec"]["selector"]
        assert selector.items() <= labels.items(), f"Service {name} selects its pods"
        container = container_of(name)
        assert container["args"][:2] == ["serve", name], "one image, the service chosen by `smoltbot serve X`"
        named_ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        for port in services[name]["spec"]["ports"]:
            target = port["targetPort"]
            assert target in named_ports or target in named_ports.values(), f"{name}: {port} targets a port"
    assert services["observer"]["spec"]["clusterIP"] == "None", "headless, so gRPC balances across pods"


@pytest.mark.parametrize("name", sorted(GRPC_SERVICES))
def test_grpc_services_are_probed_with_grpc_on_the_health_port(name: str) -> None:
    container = container_of(name)
    health_port = int(by_kind("ConfigMap")["smoltbot-config"]["data"]["SMOLTBOT_GRPC_HEALTH_PORT"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == health_port, f"{name}.{probe}"
    assert any(port["containerPort"] == health_port for port in container["ports"])
    listen = container["args"][container["args"].index("--listen") + 1]
    assert listen == f"0.0.0.0:{GRPC_SERVICES[name]}"


@pytest.mark.parametrize("name", sorted(HTTP_SERVICES))
def test_http_services_are_ready_on_health(name: str) -> None:
    container = container_of(name)
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["port"] == "http"
    assert {"name": "http", "containerPort": HTTP_SERVICES[name], "protocol": "TCP"} in container["ports"]


@pytest.mark.parametrize("name", SERVICES)
def test_pods_run_unprivileged(name: str) -> None:
    pod = by_kind("Deployment")[name]["spec"]["template"]["spec"]
    container = container_of(name)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert {"/var/lib/smoltbot", "/tmp", "/etc/smoltbot/tls"} <= mounts


def test_configuration_names_real_settings_and_real_services() -> None:
    config = by_kind("ConfigMap")["smoltbot-config"]["data"]
    secrets = [doc for doc in documents(K8S / "secrets.example.yaml")]
    names = set(config) | {key for doc in secrets if doc["metadata"]["name"] == "smoltbot"
                           for key in doc["stringData"]}
    assert names <= SETTINGS_VARIABLES, f"unknown settings: {sorted(names - SETTINGS_VARIABLES)}"
    services = by_kind("Service")
    for variable, service in (
        ("SMOLTBOT_REGISTRY_ADDRESS", "registry"),
        ("SMOLTBOT_OBSERVER_ADDRESS", "observer"),
    ):
        host, _, port = config[variable].rpartition(":")
        assert host == f"{service}.smoltbot.svc.cluster.local"
        assert int(port) in {p["port"] for p in services[service]["spec"]["ports"]}
    tls_secret = next(doc for doc in secrets if doc["metadata"]["name"] == "smoltbot-tls")
    mounted = {Path(config[key]).name for key in ("SMOLTBOT_TLS_CERT", "SMOLTBOT_TLS_KEY", "SMOLTBOT_TLS_CA")}
    assert mounted == set(tls_secret["stringData"])


# --------------------------------------------------------------------------- Compose


def compose_schema() -> dict[str, Any]:
    path = importlib.resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
    return json.loads(path.read_text())


@pytest.mark.parametrize("name", ["compose.yaml", "compose.tls.yaml"])
def test_compose_files_match_the_compose_specification(name: str) -> None:
    document = yaml.safe_load((DEPLOY / name).read_text())
    validator = jsonschema.Draft202012Validator(compose_schema())
    problems = sorted(validator.iter_errors(document), key=lambda error: list(error.path))
    assert not problems, "\n".join(f"{'.'.join(map(str, p.path))}: {p.message}" for p in problems)


def test_the_compose_schema_check_is_not_vacuous() -> None:
    document = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    document["services"]["gateway"]["depends_on"] = "registry"  # a string is not allowed here
    document["services"]["api"]["healtcheck"] = {}  # misspelt
    errors = list(jsonschema.Draft202012Validator(compose_schema()).iter_errors(document))
    assert len(errors) >= 2


def test_compose_runs_every_service_on_postgresql_with_consistent_references() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", *SERVICES}
    assert services["observer"]["deploy"]["replicas"] >= 2
    assert services["gateway"]["deploy"]["replicas"] >= 2
    for name in SERVICES:
        service = services[name]
        assert service["command"][:2] == ["serve", name]
        assert "healthcheck" in service, name
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on {dependency}"
        environment = service["environment"]
        assert set(environment) <= SETTINGS_VARIABLES, sorted(set(environment) - SETTINGS_VARIABLES)
        assert environment["SMOLTBOT_DATABASE_URL"].startswith("postgresql://")
        assert "@postgres:5432/" in environment["SMOLTBOT_DATABASE_URL"]
        for variable, target in (
            ("SMOLTBOT_REGISTRY_ADDRESS", "registry"),
            ("SMOLTBOT_OBSERVER_ADDRESS", "observer"),
        ):
            host, _, port = environment[variable].rpartition(":")
            assert host == target
            listen = services[target]["command"][services[target]["command"].index("--listen") + 1]
            assert listen == f"0.0.0.0:{port}"
    for name in ("registry", "observer"):
        assert "8081" in " ".join(services[name]["healthcheck"]["test"])
        assert services[name]["environment"]["SMOLTBOT_GRPC_HEALTH_PORT"] == "8081"
    named_volumes = {
        mount.split(":")[0]
        for service in services.values()
        for mount in service.get("volumes", [])
        if not mount.startswith((".", "/"))
    }
    assert named_volumes <= set(compose.get("volumes", {}))
    overlay = yaml.safe_load((DEPLOY / "compose.tls.yaml").read_text())
    assert set(overlay["services"]) == set(SERVICES)
    for service in overlay["services"].values():
        assert set(service["environment"]) <= SETTINGS_VARIABLES


# --------------------------------------------------------------------------- Dockerfile


def test_the_dockerfile_is_multi_stage_non_root_and_ships_every_package() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    instructions = [line for line in dockerfile.splitlines() if line and not line.startswith((" ", "#"))]
    stages = [line for line in instructions if line.startswith("FROM ")]
    assert len(stages) >= 2 and " AS build" in stages[0]
    runtime = dockerfile[dockerfile.rindex("\nFROM "):]
    user = re.search(r"^USER (\S+)", runtime, re.MULTILINE)
    assert user and user.group(1).split(":")[0] not in ("root", "0")
    assert 'ENTRYPOINT ["smoltbot"]' in runtime
    assert "COPY --from=build /opt/smoltbot /opt/smoltbot" in runtime
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    folders = {folder.split("/")[0] for folder in pyproject["tool"]["setuptools"]["package-dir"].values()}
    copied = set(re.findall(r"^COPY (\S+) \1$", dockerfile, re.MULTILINE))
    assert folders <= copied, f"not copied into the image: {sorted(folders - copied)}"
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text()
    for folder in folders:
        assert f"!{folder}/**" in ignore, f"{folder} is excluded from the build context"


async def test_the_dev_certificate_script_makes_certificates_the_services_accept(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from smoltbot.core.grpc_client import open_channel
    from smoltbot.core.grpc_server import new_grpc_server
    from smoltbot.core.tls import TlsConfig

    await asyncio.to_thread(subprocess.run, ["sh", str(DEPLOY / "gen-dev-certs.sh"), str(tmp_path / "certs")],
                            check=True, capture_output=True, timeout=60)
    certs = tmp_path / "certs"
    tls = TlsConfig.from_files(certs / "tls.crt", certs / "tls.key", certs / "ca.crt")
    server = new_grpc_server("127.0.0.1:0", [], lambda _server: None, tls=tls)
    await server.start()
    try:
        # Mutual TLS with the one certificate on both ends, checked against the name "registry".
        named = TlsConfig.from_files(
            certs / "tls.crt", certs / "tls.key", certs / "ca.crt", server_name="registry"
        )
        channel = open_channel(f"127.0.0.1:{server.port}", named)
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        await channel.close()
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(0)
