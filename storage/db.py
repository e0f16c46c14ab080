"""Database connection: the Tortoise config, start-up and migrations."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tortoise import Tortoise
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.backends.base.executor import EXECUTOR_CACHE
from tortoise.connection import get_connection
from tortoise.migrations.api import migrate as run_migrations
from tortoise.migrations.executor import MigrationExecutor

MODELS_MODULE = "storage.models"
MIGRATIONS_MODULE = "storage.migrations"


class DatabaseUnavailable(ConnectionError):
    """The database cannot be reached (or opened) at start-up; ``str()`` is the reason, in one line."""

    @classmethod
    def of(cls, exc: BaseException) -> DatabaseUnavailable:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        return cls(reason if type(exc).__name__ in reason else f"{type(exc).__name__}: {reason}")


@dataclass(frozen=True, slots=True)
class Pool:
    """The connection pool of a PostgreSQL database (asyncpg's); SQLite has one connection and
    ignores it. ``statement_cache_size`` 0 turns asyncpg's prepared-statement cache off, which
    PgBouncer's transaction pooling needs (README, "Deployment")."""

    min_size: int = 1
    max_size: int = 5
    statement_cache_size: int = 100


async def keep_session(_connection: object) -> None:
    """asyncpg's pool reset without its reset query. By default every connection given back to
    the pool runs ``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``: one more
    round trip after every statement outside a transaction, which is nearly all of genbot's. genbot
    leaves no session state to reset (no advisory locks, cursors, ``LISTEN`` or ``SET``), and the
    pool still rolls back a transaction left open before it calls this."""


def connection_config(db_url: str, pool: Pool | None = None) -> str | dict[str, Any]:
    """Tortoise's connection of ``db_url``: the URL itself for SQLite; for PostgreSQL, the URL's
    credentials with ``pool``'s sizes (they win over ``minsize``/``maxsize`` in the URL's query),
    and the pool's reset :func:`keep_session`."""
    if not db_url.startswith(("postgres:", "asyncpg:", "psycopg:")):
        return db_url
    config = expand_db_url(db_url)
    if config["engine"] == "tortoise.backends.asyncpg":
        config["credentials"]["reset"] = keep_session
    if pool is not None:
        config["credentials"].update(
            minsize=pool.min_size, maxsize=pool.max_size, statement_cache_size=pool.statement_cache_size
        )
    return config


def tortoise_config(db_url: str, pool: Pool | None = None) -> dict[str, Any]:
    return {
        "connections": {"default": connection_config(db_url, pool)},
        "apps": {
            "models": {
                "models": [MODELS_MODULE],
                "default_connection": "default",
                "migrations": MIGRATIONS_MODULE,
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


#: For the ``tortoise`` command line (``tortoise makemigrations``); see ``[tool.tortoise]``.
TORTOISE_ORM = tortoise_config("sqlite://data/genbot.sqlite3")


def _ensure_sqlite_dir(db_url: str) -> None:
    if db_url.startswith("sqlite://") and ":memory:" not in db_url:
        try:
            Path(db_url.removeprefix("sqlite://").split("?")[0]).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseUnavailable.of(exc) from exc


async def ping() -> None:
    """One ``SELECT 1`` on the default connection (a readiness check); raises what the driver
    raises when the database does not answer."""
    await get_connection("default").execute_query("SELECT 1")


async def _reachable() -> None:
    """Raise :class:`DatabaseUnavailable` unless the default connection answers a query."""
    try:
        await get_connection("default").execute_query("SELECT 1")
    except Exception as exc:
        await close()
        raise DatabaseUnavailable.of(exc) from exc


async def migrate(db_url: str, pool: Pool | None = None) -> None:
    """Apply every migration not yet applied. Safe to run again; use before start in production.

    Raises :class:`DatabaseUnavailable` when the database cannot be reached; a migration that
    fails on a reachable database raises what it raised."""
    _ensure_sqlite_dir(db_url)
    config = tortoise_config(db_url, pool)
    try:  # reach it first, so that "cannot connect" is not mistaken for a failed migration
        await Tortoise.init(config=config)
    except Exception as exc:
        await close()
        raise DatabaseUnavailable.of(exc) from exc
    await _reachable()
    await close()
    try:
        await run_migrations(config=config)
    finally:
        await Tortoise.close_connections()


async def connect(db_url: str, pool: Pool | None = None) -> None:
    """Open the connections of this process (for PostgreSQL, a pool sized by ``pool``; Tortoise's
    1 to 5 without it). Call from inside the running event loop, before any task that touches the
    database is created (Tortoise's context is a contextvar).

    Raises :class:`DatabaseUnavailable` when the database cannot be reached, at start-up rather
    than at the first request."""
    _ensure_sqlite_dir(db_url)
    try:
        await Tortoise.init(config=tortoise_config(db_url, pool), _enable_global_fallback=True)
    except Exception as exc:
        await close()
        raise DatabaseUnavailable.of(exc) from exc
    await _reachable()


async def pending_migrations() -> list[str]:
    """The migrations of this release that the connected database has not applied, in the order
    ``migrate`` would apply them; empty when it is up to date. Tortoise records applied migrations
    in its ``tortoise_migrations`` table (app, name); a database that has none (never migrated)
    lacks them all."""
    executor = MigrationExecutor(get_connection("default"), tortoise_config("")["apps"])
    return [step.migration.name for step in await executor.plan() if not step.backward]


async def close() -> None:
    await Tortoise.close_connections()
    # Tortoise caches each model's SQL per connection *name*, not per database: a process that
    # connects again to another kind of database (tests, tools) must not reuse the old dialect.
    EXECUTOR_CACHE.clear()
