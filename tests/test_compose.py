"""docker-compose.yml against the code it runs (issue 12): every SWITCHYARD_* variable is a real
Settings field, every stage's command a real CLI command, the production must-haves are there,
and a real compose validator accepts the file (when one is installed). No Docker daemon."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import types
import typing
from pathlib import Path

import pytest
import typer
import typer.main
import yaml
from pydantic import BaseModel
from typer.core import TyperGroup

from schemas.common import TIERS
from switchyard.cli import app
from switchyard.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
PREFIX = "SWITCHYARD_"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def app_services(compose: dict) -> dict[str, dict]:
    """The services that run the Switchyard image (infra/Dockerfile)."""
    return {name: s for name, s in compose["services"].items() if "build" in s}


def environments(node):
    """Every `environment:` mapping anywhere in the file (x- anchors included), as dicts."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "environment" and isinstance(value, list):
                yield dict(item.split("=", 1) for item in value)
            elif key == "environment" and isinstance(value, dict):
                yield value
            else:
                yield from environments(value)
    elif isinstance(node, list):
        for item in node:
            yield from environments(item)


def _models(annotation) -> list:
    """The types a field's annotation may hold (Optional and unions unwrapped)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [t for a in args for t in _models(a)]
    return [annotation]


def setting_error(name: str) -> str | None:
    """Why SWITCHYARD_A__B__C names no field path a.b.c of Settings (None: it does)."""
    parts = name.removeprefix(PREFIX).lower().split("__")
    kinds: list = [Settings]
    for i, part in enumerate(parts):
        nxt = []
        for kind in kinds:
            if isinstance(kind, type) and issubclass(kind, BaseModel) and part in kind.model_fields:
                nxt += _models(kind.model_fields[part].annotation)
            elif typing.get_origin(kind) is dict:  # a dict field: this part is a key
                nxt += _models(typing.get_args(kind)[1])
        if not nxt:
            return f"{name}: no field {part!r} at {'.'.join(parts[:i]) or 'Settings'}"
        kinds = nxt
    return None


def test_every_switchyard_variable_is_a_settings_field(compose):
    names = {n for env in environments(compose) for n in env if n.startswith(PREFIX)}
    assert names, "no SWITCHYARD_* variable found in docker-compose.yml"
    errors = [e for n in sorted(names) if (e := setting_error(n))]
    assert not errors, "not a field of switchyard.settings.Settings:\n" + "\n".join(errors)


def _interpolated(value) -> str:
    return re.sub(r"\$\{[^}]*\}", "secret", str(value))  # ${VAR:?...} as compose would fill it


def test_every_app_service_environment_makes_valid_settings(compose, monkeypatch):
    for name, service in app_services(compose).items():
        for var in [v for v in os.environ if v.startswith(PREFIX)]:
            monkeypatch.delenv(var)
        for var, value in service.get("environment", {}).items():
            monkeypatch.setenv(var, _interpolated(value))
        try:
            settings = Settings()
        except ValueError as exc:
            pytest.fail(f"service {name}: its environment is not valid Settings: {exc}")
        assert not settings.workers.all_tiers_small, f"service {name}: production serves each tier's own model"
        for tier in TIERS:
            model = settings.workers.models[tier]
            assert model.endpoint, f"service {name}: tier {tier} has no endpoint (SWITCHYARD_WORKERS__MODELS__...)"


def test_tier_endpoints_are_the_serve_apps(compose):
    """Each tier's endpoint is its Ray Serve app's route prefix + /v1 and its name the app's model_id."""
    serve = yaml.safe_load((ROOT / "infra/serve/production.yaml").read_text())
    apps = {a["route_prefix"]: a["args"]["llm_configs"][0]["model_loading_config"]["model_id"]
            for a in serve["applications"]}
    env = app_services(compose)["router"]["environment"]
    for tier in TIERS:
        key = f"{PREFIX}WORKERS__MODELS__{tier.upper()}__"
        prefix = env[key + "ENDPOINT"].split("://", 1)[1].split("/", 1)[1].removesuffix("/v1")
        assert f"/{prefix}" in apps, f"{key}ENDPOINT: no Serve app with route_prefix /{prefix}"
        assert env[key + "NAME"] == apps[f"/{prefix}"], f"{key}NAME is not the model_id of /{prefix}"


def resolve(args: list[str]) -> typer.Context:
    """The context `switchyard ARGS` would run with, through typer's click object (typer vendors
    click: its UsageError is a typer.TyperException); raises that when ARGS are no command."""
    command = typer.main.get_command(app)
    ctx, name = None, "switchyard"
    while isinstance(command, TyperGroup):
        ctx = typer.Context(command, info_name=name, parent=ctx)
        if not args or args[0].startswith("-"):
            raise typer.BadParameter(f"{ctx.command_path!r} needs a subcommand")
        name, args = args[0], args[1:]
        command = command.get_command(ctx, name)
        if command is None:
            raise typer.BadParameter(f"no command {name!r} in {ctx.command_path!r}")
    return command.make_context(name, list(args), parent=ctx)  # unknown or missing options raise


def test_every_app_service_command_is_a_real_cli_command(compose):
    services = app_services(compose)
    for name in ["init", "router", "sink", "worker-small", "worker-medium", "worker-large", "retrainer", "api"]:
        assert "command" in services.get(name, {}), f"service {name} is missing or has no command"
    tiers = []
    for name, service in services.items():
        if "command" not in service:
            continue
        try:
            ctx = resolve([str(a) for a in service["command"]])
        except typer.TyperException as exc:
            pytest.fail(f"service {name}: `switchyard {' '.join(service['command'])}` is no CLI command: "
                        f"{exc.format_message()}")
        if "tier" in ctx.params:
            assert ctx.params["tier"] in TIERS, f"service {name}: unknown tier {ctx.params['tier']!r}"
            tiers.append(ctx.params["tier"])
    assert sorted(tiers) == sorted(TIERS), f"one worker service per tier expected, got {tiers}"


def test_kafka_and_clickhouse_have_healthchecks_and_named_volumes(compose):
    named = set(compose.get("volumes") or {})
    for name in ["kafka", "clickhouse"]:
        service = compose["services"][name]
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        volumes = [str(v).split(":", 1)[0] for v in service.get("volumes", [])]
        assert any(v in named for v in volumes), f"{name} keeps its data in no named volume"


def test_app_stages_have_healthchecks(compose):
    for name, service in app_services(compose).items():
        if service.get("command", [None])[0] == "stage":
            assert service.get("healthcheck", {}).get("test"), f"service {name} has no healthcheck"


def test_the_ray_worker_reserves_gpus(compose):
    devices = (compose["services"]["ray-worker"].get("deploy", {}).get("resources", {})
               .get("reservations", {}).get("devices", []))
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), \
        "ray-worker reserves no NVIDIA GPU (deploy.resources.reservations.devices)"


def test_the_api_binds_all_interfaces_in_its_container_and_publishes_on_loopback(compose):
    api = compose["services"]["api"]
    env = api["environment"]
    assert env.get(f"{PREFIX}API__HOST") == "0.0.0.0", "the API must listen on 0.0.0.0 inside its container"
    ports = api.get("ports", [])
    assert ports, "the API publishes no port"
    for port in ports:
        host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).rsplit(":", 2)[0]
        target = port.get("target") if isinstance(port, dict) else str(port).rsplit(":", 1)[1]
        assert host_ip == "127.0.0.1", f"the API's port {port!r} is published beyond loopback"
        assert str(target) == str(env[f"{PREFIX}API__PORT"]), f"port {port!r} is not SWITCHYARD_API__PORT"


def test_no_secret_is_written_into_the_file():
    text = COMPOSE.read_text()
    for key in ["CLICKHOUSE_PASSWORD", "OPENAI_API_KEY", f"{PREFIX}API_KEY"]:
        for value in re.findall(rf"^\s*{key}:\s*(\S+)", text, re.M):
            assert value.startswith("${"), f"{key} is hard-coded in docker-compose.yml; take it from the environment"


def test_a_real_compose_validator_accepts_the_file():
    """Debian's compose v1 (`apt-get install docker-compose`) checks the schema without a daemon."""
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose not on PATH (Debian: apt-get install -y docker-compose)")
    env = {**os.environ, "CLICKHOUSE_PASSWORD": "test-only"}
    done = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"docker-compose config rejects docker-compose.yml:\n{done.stderr}"
