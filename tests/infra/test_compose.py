"""docker-compose.yml describes production; no Docker engine runs here, so check it statically.

Every service is runnable (an image or a build), dependencies name real services and wait on
real health, our services run modules that exist with settings `infra.settings.Settings`
knows, and Kafka is a KRaft cluster whose replication matches the topics we create.
"""

from __future__ import annotations

import importlib.util
import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from infra.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

SETTINGS_ENV = {f.metadata["env"] for f in fields(Settings)}
_VARIABLE = re.compile(r"\$\{[^}]*\}")


def _load() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


COMPOSE = _load()
SERVICES: dict[str, dict[str, Any]] = COMPOSE.get("services") or {}
OURS = sorted(name for name, svc in SERVICES.items() if "build" in svc)
KAFKA = sorted(name for name, svc in SERVICES.items() if str(svc.get("image", "")).startswith("apache/kafka"))


def interpolated(value: object) -> str:
    """A value as compose would see it, with `${VAR...}` replaced by a placeholder."""
    return _VARIABLE.sub("x", str(value))


def environment(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        return {k: v for k, v in pairs}
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def depends_on(svc: dict[str, Any]) -> dict[str, str]:
    """Target -> condition (list form means service_started)."""
    deps = svc.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def build_context(svc: dict[str, Any]) -> tuple[Path, Path]:
    build = svc["build"]
    if isinstance(build, str):
        build = {"context": build}
    context = (ROOT / build.get("context", ".")).resolve()
    return context, (context / build.get("dockerfile", "Dockerfile")).resolve()


def module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def test_compose_has_the_stack() -> None:
    assert "version" not in COMPOSE, "the top-level `version` key is obsolete"
    for name in ("postgres", "redis", "migrate", "topics", "worker", "dispatcher", "console"):
        assert name in SERVICES, f"missing service {name!r}"
    assert KAFKA, "no apache/kafka service"
    assert OURS, "no service builds our image"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_has_image_or_build(name: str) -> None:
    svc = SERVICES[name]
    assert svc.get("image") or svc.get("build"), f"{name}: neither image nor build"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_depends_on_targets_exist_and_can_be_waited_for(name: str) -> None:
    for target, condition in depends_on(SERVICES[name]).items():
        assert target in SERVICES, f"{name} depends on unknown service {target!r}"
        assert target != name
        assert condition in {"service_started", "service_healthy", "service_completed_successfully"}
        if condition == "service_healthy":
            assert "healthcheck" in SERVICES[target], f"{name} waits for {target} healthy: no healthcheck"
        if condition == "service_completed_successfully":
            restart = str(SERVICES[target].get("restart", "no"))
            assert restart == "no", f"{target} is a one-shot job but restarts ({restart})"


def test_one_shot_jobs_gate_the_services() -> None:
    assert depends_on(SERVICES["migrate"]).get("postgres") == "service_healthy"
    for broker in KAFKA:
        assert depends_on(SERVICES["topics"]).get(broker) == "service_healthy"
    for name in ("worker", "dispatcher", "console"):
        deps = depends_on(SERVICES[name])
        assert deps.get("migrate") == "service_completed_successfully", name
        assert deps.get("topics") == "service_completed_successfully", name


@pytest.mark.parametrize("name", OURS)
def test_command_runs_an_existing_project_module(name: str) -> None:
    command = SERVICES[name].get("command")
    assert isinstance(command, list), f"{name}: command must be in list (exec) form"
    assert command[:2] == ["python", "-m"] and len(command) >= 3, f"{name}: {command}"
    module = command[2]
    package = module.split(".")[0]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    included = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    assert any(re.fullmatch(p.replace("*", ".*"), package) for p in included), (
        f"{name}: package {package!r} is not installed by `pip install .`"
    )
    assert module_exists(module), f"{name}: module {module!r} does not exist"


@pytest.mark.parametrize("name", OURS)
def test_build_uses_the_dockerfile(name: str) -> None:
    context, dockerfile = build_context(SERVICES[name])
    assert context == ROOT, f"{name}: build context {context} is not the project root"
    assert dockerfile == DOCKERFILE.resolve() and dockerfile.is_file(), f"{name}: {dockerfile}"


def test_dockerfile() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    instructions = [line.split(None, 1) for line in text.splitlines() if line and not line.startswith("#")]
    froms = [i[1] for i in instructions if i[0] == "FROM"]
    assert froms[-1] == "python:3.11-slim"  # the final image; earlier stages only build assets
    assert "COPY --from=pages /pages/node_modules" in text  # the map library, built in its own stage
    assert "pip install --no-deps --no-build-isolation ." in text  # the project, its deps from the lock
    users = [i[1].strip() for i in instructions if i[0] == "USER" and len(i) == 2]
    assert users, "the image must switch to a non-root user"
    assert users[-1].split(":")[0] not in {"root", "0"}


def test_dockerignore_keeps_local_state_out() -> None:
    patterns = {line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()}
    for required in (".venv", ".state", ".git"):
        assert required in patterns, f".dockerignore must exclude {required}"
    assert patterns & {"__pycache__", "**/__pycache__"}, ".dockerignore must exclude __pycache__"


@pytest.mark.parametrize("name", OURS)
def test_environment_is_known_to_settings(name: str) -> None:
    env = environment(SERVICES[name])
    unknown = sorted(set(env) - SETTINGS_ENV)
    assert not unknown, f"{name}: variables infra.settings.Settings does not read: {unknown}"
    for required in ("KAFKA_BOOTSTRAP", "DATABASE_URL", "REDIS_URL"):
        assert required in env, f"{name}: {required} not set"
    assert env.get("HTTP_HOST") == "0.0.0.0", f"{name}: containers must bind HTTP_HOST=0.0.0.0"
    # Values must parse the way Settings.from_env will parse them.
    for f in fields(Settings):
        value = env.get(f.metadata["env"])
        if value is not None and f.type in ("int", int):
            int(interpolated(value))


@pytest.mark.parametrize("name", OURS)
def test_environment_points_at_compose_services(name: str) -> None:
    env = environment(SERVICES[name])
    for server in interpolated(env["KAFKA_BOOTSTRAP"]).split(","):
        host = server.strip().rsplit(":", 1)[0]
        assert host in KAFKA, f"{name}: KAFKA_BOOTSTRAP names {host!r}, not a Kafka service"
    for var in ("DATABASE_URL", "REDIS_URL"):
        host = urlsplit(interpolated(env[var])).hostname
        assert host in SERVICES, f"{name}: {var} names host {host!r}, not a service"
    assert urlsplit(interpolated(env["DATABASE_URL"])).hostname == "postgres"
    assert urlsplit(interpolated(env["REDIS_URL"])).hostname == "redis"


def test_replicated_services() -> None:
    minimum = {"worker": 2, "dispatcher": 2, "console": 2}
    for name, least in minimum.items():
        replicas = int(SERVICES[name].get("deploy", {}).get("replicas", 1))
        assert replicas >= least, f"{name}: {replicas} replicas, want at least {least}"
    for name, svc in SERVICES.items():
        if int(svc.get("deploy", {}).get("replicas", 1)) > 1:
            assert "container_name" not in svc, f"{name}: container_name clashes between replicas"
            for port in svc.get("ports", []):
                assert ":" not in str(port), f"{name}: fixed host port {port} clashes between replicas"
            assert svc.get("restart") in {"always", "unless-stopped", "on-failure"}, name


def _nginx_servers(conf: str) -> dict[str, str]:
    """Each `server { listen N; ... }` block of an nginx config, by the port it listens on."""
    out = {}
    for m in re.finditer(r"server\s*\{\s*listen\s+(\d+);(.*?)\n    \}", conf, re.S):
        out[m.group(1)] = m.group(2)
    return out


def test_the_load_balancer_routes_each_published_port_to_the_consoles_same_port() -> None:
    """Read as nginx would: the ports the load balancer publishes are the ones it listens on, each
    proxies to an upstream of the console replicas on that same port (HTTP and the WebSocket),
    the WebSocket's upgrade is passed through, and both name the client for TRUSTED_PROXIES.
    (No Docker engine runs here, so the config is read, not served.)"""
    env = environment(SERVICES["console"])
    assert {"HTTP_PORT", "WS_PORT", "WS_PUBLIC_URL", "TRUSTED_PROXIES"} <= set(env)
    [lb] = [n for n, s in SERVICES.items() if "console" in depends_on(s) and s.get("ports")]
    published = {str(p).split(":")[-1] for p in SERVICES[lb]["ports"]}
    assert published == {env["HTTP_PORT"], env["WS_PORT"]}
    [config] = [spec for spec in COMPOSE["configs"].values() if "file" in spec]
    conf = (ROOT / config["file"]).read_text(encoding="utf-8")
    upstreams = dict(re.findall(r"upstream\s+(\w+)\s*\{[^}]*?server\s+console:(\d+)", conf))
    servers = _nginx_servers(conf)
    assert set(servers) == published
    for port, body in servers.items():
        target = re.search(r"proxy_pass\s+http://(\w+);", body)
        assert target and upstreams.get(target.group(1)) == port, (port, target, upstreams)
        assert "X-Forwarded-For $proxy_add_x_forwarded_for" in body, port
    ws = servers[env["WS_PORT"]]
    assert "proxy_set_header Upgrade $http_upgrade" in ws and "Connection $connection_upgrade" in ws
    default = re.fullmatch(r"\$\{WS_PUBLIC_URL:-(.+)\}", env["WS_PUBLIC_URL"])
    assert default and urlsplit(default.group(1)).port == int(env["WS_PORT"])  # browsers reach the lb


def test_kafka_is_kraft_with_replication() -> None:
    for name, svc in SERVICES.items():
        assert "zookeeper" not in name.lower() and "zookeeper" not in str(svc.get("image", "")).lower()
        assert not any(k.startswith("KAFKA_ZOOKEEPER") for k in environment(svc)), name
    node_ids: dict[str, str] = {}
    cluster_ids = set()
    voters = set()
    for name in KAFKA:
        env = environment(SERVICES[name])
        roles = set(env.get("KAFKA_PROCESS_ROLES", "").split(","))
        assert "broker" in roles, f"{name}: KAFKA_PROCESS_ROLES {roles}"
        assert env.get("KAFKA_NODE_ID"), name
        node_ids[name] = env["KAFKA_NODE_ID"]
        cluster_ids.add(env.get("CLUSTER_ID"))
        voters.add(env.get("KAFKA_CONTROLLER_QUORUM_VOTERS"))
        assert f"//{name}:" in env.get("KAFKA_ADVERTISED_LISTENERS", ""), f"{name}: advertised listener"
        assert "healthcheck" in SERVICES[name], name
        assert SERVICES[name].get("volumes"), f"{name}: broker data needs a volume"
    assert len(set(node_ids.values())) == len(KAFKA), f"node ids must differ: {node_ids}"
    assert len(cluster_ids) == 1 and None not in cluster_ids, "one CLUSTER_ID for all nodes"
    assert len(voters) == 1 and None not in voters, "one controller quorum for all nodes"
    for voter in next(iter(voters)).split(","):
        node_id, address = voter.split("@")
        host = address.rsplit(":", 1)[0]
        assert node_ids.get(host) == node_id, f"quorum voter {voter} is not a Kafka service"

    env = environment(SERVICES["topics"])
    replication = int(env["TOPIC_REPLICATION"])
    assert 1 <= replication <= len(KAFKA), f"TOPIC_REPLICATION {replication} > {len(KAFKA)} brokers"
    for name in KAFKA:
        kenv = environment(SERVICES[name])
        min_isr = int(kenv.get("KAFKA_MIN_INSYNC_REPLICAS", "1"))
        assert min_isr <= replication, f"{name}: min.insync.replicas {min_isr} > replication {replication}"
        if len(KAFKA) >= 3:
            assert replication >= 3 and min_isr == 2, f"{name}: want replication 3, min.insync.replicas 2"
        assert int(kenv.get("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "3")) <= len(KAFKA), name


def test_stores_have_volumes_and_healthchecks() -> None:
    assert str(SERVICES["postgres"]["image"]).startswith("postgres:16")
    assert str(SERVICES["redis"]["image"]).startswith("redis:7")
    for name in ("postgres", "redis"):
        assert "healthcheck" in SERVICES[name], name
    assert SERVICES["postgres"].get("volumes"), "postgres needs a data volume"
    declared = set(COMPOSE.get("volumes") or {})
    for svc in SERVICES.values():
        for volume in svc.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"named volume {source!r} is not declared"
