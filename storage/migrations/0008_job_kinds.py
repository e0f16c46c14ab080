"""Rows of any plugin's job kind: a ``kind`` column (every row so far is an ``imagine`` job), the
negative prompt, which only image jobs have, moved from its own column into the row's options, and
how each row's status message reads (``meta.look``, which the image plugin sets for new rows)."""

import json
from typing import Any

from tortoise import fields, migrations
from tortoise.migrations import operations as ops


def _look(options: dict[str, Any], backend: str) -> dict[str, Any]:
    """What the image plugin of this release stores for a new row (``jobs.imagine``), written out
    here: a migration must not change when the plugin does."""
    parts = [f"{options.get('width')}x{options.get('height')}", f"{options.get('steps')} steps"]
    parts.append(f"seed {options.get('seed')}")
    if options.get("negative"):
        parts.append(f"without: {options['negative']}")
    if backend == "demo":
        parts.append("demo backend")
    return {"verb": "Generating", "details": " · ".join(parts), "reroll": True}


def _json(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = json.loads(value)
    return dict(value or {})


#: Rows read and written at a time: a large table is moved in bounded memory.
BATCH = 1000


async def _image_rows(apps: Any, schema_editor: Any) -> None:
    client = schema_editor.client
    postgres = client.capabilities.dialect == "postgres"
    if not postgres:
        # Removing the column rebuilds the table, and the rebuild restarts the id sequence at the
        # highest id: kept here, and put back after (see _indexes_back).
        seq = await client.execute_query_dict("SELECT seq FROM sqlite_sequence WHERE name = 'generations'")
        _SAVED["seq"] = int(seq[0]["seq"]) if seq else 0
    select = (
        'SELECT "id", "negative", "options", "meta", "backend" FROM "generations" '
        'WHERE "id" > {after} ORDER BY "id" LIMIT {batch}'
    )
    update = (
        'UPDATE "generations" SET "options" = $1::jsonb, "meta" = $2::jsonb WHERE "id" = $3'
        if postgres
        else 'UPDATE "generations" SET "options" = ?, "meta" = ? WHERE "id" = ?'
    )
    after = 0
    while rows := await client.execute_query_dict(select.format(after=after, batch=BATCH)):
        for row in rows:
            options = _json(row["options"])
            if row["negative"]:
                options["negative"] = row["negative"]
            meta = _json(row["meta"])
            meta["look"] = _look(options, str(row["backend"]))
            values = [
                json.dumps(options, ensure_ascii=False),
                json.dumps(meta, ensure_ascii=False),
                row["id"],
            ]
            await client.execute_query(update, values)
        after = int(rows[-1]["id"])


_SAVED: dict[str, int] = {}


#: The indexes of ``generations`` as migrations 0001-0007 made them. On SQLite, removing a column
#: rebuilds the table, and Tortoise's rebuild leaves its indexes behind: they are made again, and
#: the id sequence is put back where it was (no id of a discarded row is given twice).
INDEXES = (
    'CREATE INDEX IF NOT EXISTS "generations_state_heartbeat" ON "generations" ("state", "heartbeat_at")',
    'CREATE INDEX IF NOT EXISTS "generations_platform_state" ON "generations" ("platform", "state")',
    'CREATE INDEX IF NOT EXISTS "generations_user_state" ON "generations" '
    '("platform", "workspace", "user_id", "state")',
    'CREATE INDEX IF NOT EXISTS "generations_platform_finished" ON "generations" ("platform", "finished_at")',
    'CREATE INDEX IF NOT EXISTS "generations_workspace_created" ON "generations" '
    '("platform", "workspace", "created_at")',
    'CREATE INDEX IF NOT EXISTS "generations_ticket" ON "generations" ("ticket")',
)


async def _indexes_back(apps: Any, schema_editor: Any) -> None:
    client = schema_editor.client
    if client.capabilities.dialect == "sqlite":
        for statement in INDEXES:
            await client.execute_script(statement)
        saved = _SAVED.pop("seq", 0)
        await client.execute_query(
            "DELETE FROM sqlite_sequence WHERE name = 'generations' AND seq < ?", [saved]
        )
        await client.execute_query(
            "INSERT INTO sqlite_sequence (name, seq) SELECT 'generations', ? "
            "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'generations')",
            [saved],
        )


class Migration(migrations.Migration):
    dependencies = [("models", "0007_counters")]

    initial = False

    operations = [
        ops.AddField(
            model_name="GenerationRow",
            name="kind",
            field=fields.CharField(
                default="imagine",
                db_default="imagine",
                description="The job kind (a plugin's) that runs the row.",
                max_length=32,
            ),
        ),
        ops.RunPython(_image_rows),
        ops.RemoveField(model_name="GenerationRow", name="negative"),
        ops.RunPython(_indexes_back),
    ]
