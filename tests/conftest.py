"""Test fixtures: real Redis and real databases, isolated per run.

- Redis: a redis-server this run starts on a free loopback port (bot.embedded_redis), flushed
  between tests; never the machine's shared Redis.
- SQLite: a file per test.
- PostgreSQL: a database of this run's own (``genbot_test_<random>``) on the server named by
  ``GENBOT_TEST_POSTGRES_URL`` (default ``postgres://postgres@127.0.0.1:5432/postgres``), migrated
  once, truncated between tests, dropped at the end. Without a server the PostgreSQL tests skip,
  except under CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from bot.app import Runtime, runtime
from bot.config import Settings, load_settings
from bot.embedded_redis import EmbeddedRedis, embedded_redis
from storage import db
from tests.browser import browser  # noqa: F401 (the session's Chromium, a fixture for every test)
from tests.results_plugin import results_module  # noqa: F401 (a plugin of image and file results)
from tests.s3_server import s3_bucket, s3_server  # noqa: F401 (a local S3, and a bucket of it per test)

PG_ADMIN_URL = os.environ.get("GENBOT_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")


@pytest_asyncio.fixture(scope="session")
async def redis_server() -> AsyncIterator[EmbeddedRedis]:
    async with embedded_redis() as server:
        yield server


@pytest_asyncio.fixture
async def redis(redis_server: EmbeddedRedis) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    await client.flushall()
    yield client
    await client.flushall()
    await client.aclose()


async def _pg_admin() -> asyncpg.Connection | None:
    try:
        return await asyncio.wait_for(asyncpg.connect(PG_ADMIN_URL), 5)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return None


@contextlib.asynccontextmanager
async def pg_database(prefix: str) -> AsyncIterator[str]:
    """A new, empty PostgreSQL database of its own for the block (dropped after it); its URL.
    Without a server the test skips, saying why, and fails in CI, which must run it."""
    admin = await _pg_admin()
    if admin is None:
        message = f"no PostgreSQL at {PG_ADMIN_URL} (set GENBOT_TEST_POSTGRES_URL)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run the PostgreSQL tests")
        pytest.skip(message)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest_asyncio.fixture(scope="session")
async def postgres_url() -> AsyncIterator[str]:
    async with pg_database("genbot_test") as url:
        await db.migrate(url)
        yield url


async def truncate_pg(url: str) -> None:
    """Empty every table of the run's PostgreSQL database."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "TRUNCATE generations, chat_messages, bans, blocked_terms, workspaces, audit_log, inbox, counters, blobs "
            "RESTART IDENTITY"
        )
    finally:
        await conn.close()


@pytest_asyncio.fixture
async def pg_url(postgres_url: str) -> str:
    """The run's PostgreSQL database, migrated and emptied."""
    await truncate_pg(postgres_url)
    return postgres_url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """A migrated, empty database: SQLite, then PostgreSQL. (A plain fixture on purpose: it sets
    up the async ones it picks outside the running loop.)"""
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


@pytest_asyncio.fixture
async def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite://{tmp_path / 'genbot.sqlite3'}"
    await db.migrate(url)
    return url


def make_settings(redis_url: str, db_url: str, tmp_path: Path, **overrides: object) -> Settings:
    """Fast settings for tests: a quick demo backend, no edit throttling, and quotas out of the way
    (the quota tests set their own)."""
    base: dict[str, object] = {
        "redis": {"url": redis_url, "key_prefix": "gt", "queue_name": "gt:queue"},
        "database": {"url": db_url},
        "blobs": {"dir": tmp_path / "blobs"},
        "backend": {"name": "demo", "demo_step_delay_s": 0.02},
        "worker": {"progress_interval_s": 0.0},
        "renderer": {"min_edit_interval_s": 0.0, "claim_idle_s": 1.0},
        "local": {"host": "127.0.0.1", "port": 0},
        "quota": {"max_queued": 1000, "max_running": 1000, "rate_count": 10_000},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}  # type: ignore[dict-item]
        else:
            base[key] = value
    return load_settings(_env_file=None, **base)


@pytest.fixture
def settings(redis_server: EmbeddedRedis, sqlite_url: str, tmp_path: Path) -> Settings:
    return make_settings(redis_server.url, sqlite_url, tmp_path)


@pytest_asyncio.fixture
async def rt(settings: Settings, redis: Redis) -> AsyncIterator[Runtime]:
    """The processes' shared runtime, on an empty Redis whose ticket counter is seeded from the
    database, as every bot and worker does at start-up."""
    async with runtime(settings) as value:
        await value.core.check_tickets()
        yield value
