"""Start-up mistakes, as a user meets them: the real ``genbot`` command line as a separate process,
each mistake answered by exactly one line on stderr that names what to fix, and the exit code (2: a
setting, 1: a server out of reach or something in use). See the README's Settings section."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from tortoise.migrations.api import migrate as run_migrations

from bot.config import display_url
from bot.embedded_redis import EmbeddedRedis, free_port
from storage import db
from tests.cli import GENBOT, genbot_env, run_genbot

MIGRATIONS = sorted(p.stem for p in (Path(db.__file__).parent / "migrations").glob("0*.py"))
NOT_MIGRATED = "run `genbot migrate` with the same GENBOT_DATABASE__URL"


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


# -- settings (exit code 2) --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "env", "line"),
    [
        (
            "migrate",
            {"GENBOT_DATABSE__URL": "sqlite://elsewhere.sqlite3"},
            "genbot: GENBOT_DATABSE__URL is not a setting; did you mean GENBOT_DATABASE__URL?",
        ),
        (
            "migrate",
            {"GENBOT_DATABASE_URL": "sqlite://elsewhere.sqlite3"},
            "genbot: GENBOT_DATABASE_URL is not a setting; did you mean GENBOT_DATABASE__URL?",
        ),
        (
            "bot",
            {"GENBOT_PLATFROM": "slack"},
            "genbot: GENBOT_PLATFROM is not a setting; did you mean GENBOT_PLATFORM?",
        ),
        (
            "worker",
            {"GENBOT_LOCAL__MEMBERS": '["Alice", Bob]'},
            "genbot: GENBOT_LOCAL__MEMBERS: not a JSON list (Expecting value at character 11); "
            'write ["a","b"] or a comma-separated list a,b',
        ),
        (
            "bot",
            {"GENBOT_REDIS__URL": "127.0.0.1:6379"},
            "genbot: GENBOT_REDIS__URL: must be a redis://, rediss:// (TLS) or unix:// URL, "
            "such as redis://127.0.0.1:6379/0",
        ),
        (
            "migrate",
            {"GENBOT_DATABASE__URL": "mysql://genbot:secret@db:3306/genbot"},
            "genbot: GENBOT_DATABASE__URL: genbot runs on SQLite or PostgreSQL: write sqlite://PATH "
            "(such as sqlite://data/genbot.sqlite3) or postgres://USER:PASSWORD@HOST:5432/DATABASE "
            "(postgresql:// works too)",
        ),
    ],
)
async def test_a_setting_mistake_is_one_line_and_nothing_runs(
    tmp_path: Path, command: str, env: dict[str, str], line: str
) -> None:
    exited = await run_genbot(command, cwd=tmp_path, env=env)
    assert (exited.code, exited.one_line()) == (2, line)
    assert not (tmp_path / "data").exists(), "nothing was migrated or started"


async def test_a_misspelt_name_in_dot_env_is_one_line(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("GENBOT_PLATFORM=local\nGENBOT_DATABSE__URL=sqlite://x.sqlite3\n")
    exited = await run_genbot("migrate", cwd=tmp_path, env={})
    assert exited.code == 2
    assert exited.one_line() == (
        "genbot: GENBOT_DATABSE__URL in .env is not a setting; did you mean GENBOT_DATABASE__URL?"
    )


async def test_comma_lists_and_the_test_prefix_are_fine(tmp_path: Path) -> None:
    exited = await run_genbot(
        "migrate",
        cwd=tmp_path,
        env={
            "GENBOT_DATABASE__URL": "sqlite://db.sqlite3",
            "GENBOT_LOCAL__MEMBERS": "Alice,Bob",
            "GENBOT_LOCAL__ADMINS": "Bob",
            "GENBOT_TEST_ANYTHING": "left to the tests",
        },
    )
    assert (exited.code, exited.stdout, exited.stderr) == (0, "migrations applied\n", "")


@pytest.mark.parametrize("command", ["bot", "worker"])
async def test_a_database_never_migrated_is_refused(
    tmp_path: Path, redis_server: EmbeddedRedis, command: str
) -> None:
    url = f"sqlite://{tmp_path / 'new.sqlite3'}"
    exited = await run_genbot(
        command, cwd=tmp_path, env={"GENBOT_DATABASE__URL": url, "GENBOT_REDIS__URL": redis_server.url}
    )
    assert exited.code == 2
    assert exited.one_line() == (
        f"genbot: the database at {url} is not migrated ({len(MIGRATIONS)} migrations, "
        f"{MIGRATIONS[0]} to {MIGRATIONS[-1]} not applied): {NOT_MIGRATED}"
    )


async def test_a_database_of_an_older_release_is_refused(tmp_path: Path, redis_server: EmbeddedRedis) -> None:
    url = f"sqlite://{tmp_path / 'old.sqlite3'}"
    await run_migrations(config=db.tortoise_config(url), target=f"models.{MIGRATIONS[-2]}")
    await db.close()
    exited = await run_genbot(
        "bot", cwd=tmp_path, env={"GENBOT_DATABASE__URL": url, "GENBOT_REDIS__URL": redis_server.url}
    )
    assert exited.code == 2
    assert exited.one_line() == (
        f"genbot: the database at {url} is not migrated ({MIGRATIONS[-1]} not applied): {NOT_MIGRATED}"
    )


# -- servers out of reach, things in use (exit code 1) ------------------------------------------


async def test_redis_out_of_reach_names_redis_its_url_and_the_setting(
    tmp_path: Path, sqlite_url: str
) -> None:
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    exited = await run_genbot(
        "worker", cwd=tmp_path, env={"GENBOT_DATABASE__URL": sqlite_url, "GENBOT_REDIS__URL": url}
    )
    assert exited.code == 1
    line = exited.one_line()
    assert line.startswith(f"genbot: cannot reach Redis at {display_url(url)} (")
    assert line.endswith("start it, or point GENBOT_REDIS__URL at a running one")
    assert "s3cret" not in line


@pytest.mark.parametrize("command", ["migrate", "bot"])
async def test_a_database_out_of_reach_names_its_url_and_the_setting(tmp_path: Path, command: str) -> None:
    url = f"postgres://genbot:s3cret@127.0.0.1:{free_port()}/genbot"
    exited = await run_genbot(command, cwd=tmp_path, env={"GENBOT_DATABASE__URL": url})
    assert exited.code == 1
    line = exited.one_line()
    assert line.startswith(f"genbot: cannot reach the database at {display_url(url)} (")
    assert line.endswith("check GENBOT_DATABASE__URL and that the server runs")
    assert "s3cret" not in line


async def test_bot_on_a_busy_port_names_the_port_setting(
    tmp_path: Path, redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, held_port: int
) -> None:
    env = {
        "GENBOT_DATABASE__URL": sqlite_url,
        "GENBOT_REDIS__URL": redis_server.url,
        "GENBOT_REDIS__KEY_PREFIX": "busyport",
        "GENBOT_LOCAL__PORT": str(held_port),
    }
    exited = await run_genbot("bot", cwd=tmp_path, env=env)
    assert exited.code == 1
    assert exited.one_line() == (
        f"genbot: port {held_port} on 127.0.0.1 is in use: set GENBOT_LOCAL__PORT (or genbot dev --port) "
        "to a free port"
    )


async def test_dev_on_a_busy_port_is_one_line_too(tmp_path: Path, held_port: int) -> None:
    exited = await run_genbot("dev", "--port", str(held_port), cwd=tmp_path, env={})
    assert exited.code == 1
    assert exited.one_line() == (
        f"genbot: port {held_port} on 127.0.0.1 is in use: set GENBOT_LOCAL__PORT (or genbot dev --port) "
        "to a free port"
    )


async def test_a_second_dev_on_the_same_folder_stops_at_once(tmp_path: Path) -> None:
    first = await asyncio.create_subprocess_exec(
        *GENBOT,
        "dev",
        "--port",
        "0",
        cwd=tmp_path,
        env=genbot_env({}),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert first.stdout is not None
        line = await asyncio.wait_for(first.stdout.readline(), 60)
        assert re.match(rb"genbot local chat: http://127\.0\.0\.1:\d+", line), line
        second = await run_genbot("dev", "--port", "0", cwd=tmp_path, env={})
        assert second.code == 1
        assert second.one_line() == (
            f"genbot: another genbot dev is running on {(tmp_path / 'data').resolve()} (pid {first.pid}): "
            "stop it first, or run this one from another folder (each folder keeps its own data/)"
        )
        assert first.returncode is None, "the first one runs on"
    finally:
        first.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(first.wait(), 30)
    assert code == 0


async def test_dev_with_a_redis_server_that_will_not_start_is_one_line(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    broken = bin_dir / "redis-server"
    broken.write_text("#!/bin/sh\nexit 1\n")
    broken.chmod(0o755)
    exited = await run_genbot("dev", cwd=tmp_path, env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert exited.code == 1
    assert exited.one_line() == (
        f"genbot: could not start the embedded Redis ({broken} exited or did not answer, three times): "
        f"check that `{broken} --version` runs, or install Redis"
    )


async def test_a_sqlite_file_that_cannot_be_opened_names_the_setting(tmp_path: Path) -> None:
    (tmp_path / "not-a-folder").write_text("a file where the database's folder should be")
    url = f"sqlite://{tmp_path / 'not-a-folder' / 'genbot.sqlite3'}"
    exited = await run_genbot("migrate", cwd=tmp_path, env={"GENBOT_DATABASE__URL": url})
    assert exited.code == 1
    line = exited.one_line()
    assert line.startswith(f"genbot: cannot reach the database at {url} (")
    assert line.endswith("check GENBOT_DATABASE__URL; the file and its folder must be writable")
