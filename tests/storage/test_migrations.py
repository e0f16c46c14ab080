"""Migrations move the rows a deployment already has: run up to a release's last migration, write
rows as that release did, then migrate and read them as this release does."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from tortoise import Tortoise
from tortoise.connection import get_connection
from tortoise.migrations.api import migrate as run_migrations

from bot.models import Actor
from bot.views import build_view
from jobs.backends.base import ImageRequest
from storage import db
from storage.store import TortoiseGenerationStore
from tests.conftest import pg_database
from tests.image_jobs import image_job

BATCH = importlib.import_module("storage.migrations.0008_job_kinds").BATCH
REQUEST = ImageRequest("a hen", "", 512, 512, 4, 1)

#: A row as genbot wrote it before job kinds (migration 0007): its negative prompt in a column.
BEFORE_KINDS = (
    'INSERT INTO "generations" ("platform", "workspace", "channel", "user_id", "user_name", "prompt", '
    '"negative", "options", "backend", "state", "created_at", "attempts", "message", "meta", "version") '
    "VALUES ('local', 'local', 'general', 'alice', 'Alice', {prompt}, {negative}, "
    '\'{{"width": 512, "height": 768, "steps": 20, "seed": 42}}\', \'demo\', \'succeeded\', '
    'CURRENT_TIMESTAMP, 0, \'{{}}\', \'{{"progress": {{"step": 20, "total": 20}}}}\', 3)'
)


@pytest_asyncio.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database no migration has touched."""
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path / 'old.sqlite3'}"
        return
    async with pg_database("genbot_migrate") as url:
        yield url


async def test_rows_of_the_release_before_job_kinds_read_as_image_jobs(empty_url: str) -> None:
    config = db.tortoise_config(empty_url)
    await run_migrations(config=config, target="models.0007_counters")
    await Tortoise.init(config=config)
    try:
        conn = get_connection("default")
        for prompt, negative in (("'a fox'", "'blurry, text'"), ("'a hare'", "''")):
            await conn.execute_query(BEFORE_KINDS.format(prompt=prompt, negative=negative))
        for _ in range(2 * BATCH + 1):  # more than one batch of the migration
            await conn.execute_query(BEFORE_KINDS.format(prompt="'an owl'", negative="'fog'"))
        await conn.execute_query(f'DELETE FROM "generations" WHERE "id" = {2 * BATCH + 3}')
    finally:
        await Tortoise.close_connections()

    await db.migrate(empty_url)
    await db.connect(empty_url)
    try:
        store = TortoiseGenerationStore()
        fox, hare = await store.get_many([1, 2])
        assert (fox.kind, fox.prompt, fox.options["negative"]) == ("imagine", "a fox", "blurry, text")
        assert "negative" not in hare.options and hare.kind == "imagine"
        assert fox.meta["progress"] == {"step": 20, "total": 20}, "the rest of meta is kept"
        view = build_view(fox, None, None)
        assert view.details == "512x768 · 20 steps · seed 42 · without: blurry, text · demo backend · job 1"
        assert [b.action for b in view.buttons] == ["reroll"]
        indexes = await get_connection("default").execute_query_dict(
            "SELECT indexname AS name FROM pg_indexes WHERE tablename = 'generations'"
            if "postgres" in empty_url
            else "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'generations'"
        )
        names = {row["name"] for row in indexes}
        assert {"generations_state_heartbeat", "generations_ticket", "generations_user_state"} <= names
        owls = await store.get_many(list(range(3, 2 * BATCH + 3)))
        assert len(owls) == 2 * BATCH and all(o.options["negative"] == "fog" and o.look for o in owls)
        new = await store.create(image_job(Actor("local", "local", "bob", "Bob"), "general", REQUEST))
        assert new.id == 2 * BATCH + 4, "the id of the row deleted before the migration is not given again"
    finally:
        await db.close()
