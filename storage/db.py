"""Database connection: the Tortoise config, start-up and migrations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tortoise import Tortoise
from tortoise.backends.base.executor import EXECUTOR_CACHE
from tortoise.connection import get_connection
from tortoise.migrations.api import migrate as run_migrations

MODELS_MODULE = "storage.models"
MIGRATIONS_MODULE = "storage.migrations"


class DatabaseUnavailable(ConnectionError):
    """The database cannot be reached at start-up."""


def tortoise_config(db_url: str) -> dict[str, Any]:
    return {
        "connections": {"default": db_url},
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
        Path(db_url.removeprefix("sqlite://").split("?")[0]).parent.mkdir(parents=True, exist_ok=True)


async def migrate(db_url: str) -> None:
    """Apply every migration not yet applied. Safe to run again; use before start in production."""
    _ensure_sqlite_dir(db_url)
    await run_migrations(config=tortoise_config(db_url))
    await Tortoise.close_connections()


async def connect(db_url: str) -> None:
    """Open the connections of this process. Call from inside the running event loop, before any
    task that touches the database is created (Tortoise's context is a contextvar)."""
    _ensure_sqlite_dir(db_url)
    await Tortoise.init(config=tortoise_config(db_url), _enable_global_fallback=True)
    try:  # fail at start-up, not at the first request
        await get_connection("default").execute_query("SELECT 1")
    except Exception as exc:
        await close()
        raise DatabaseUnavailable(f"cannot reach the database ({type(exc).__name__}: {exc})") from exc


async def close() -> None:
    await Tortoise.close_connections()
    # Tortoise caches each model's SQL per connection *name*, not per database: a process that
    # connects again to another kind of database (tests, tools) must not reuse the old dialect.
    EXECUTOR_CACHE.clear()
