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


async def _image_rows(apps: Any, schema_editor: Any) -> None:
    client = schema_editor.client
    postgres = client.capabilities.dialect == "postgres"
    rows = await client.execute_query_dict(
        'SELECT "id", "negative", "options", "meta", "backend" FROM "generations"'
    )
    update = (
        'UPDATE "generations" SET "options" = $1::jsonb, "meta" = $2::jsonb WHERE "id" = $3'
        if postgres
        else 'UPDATE "generations" SET "options" = ?, "meta" = ? WHERE "id" = ?'
    )
    for row in rows:
        options = _json(row["options"])
        if row["negative"]:
            options["negative"] = row["negative"]
        meta = _json(row["meta"])
        meta["look"] = _look(options, str(row["backend"]))
        values = [json.dumps(options, ensure_ascii=False), json.dumps(meta, ensure_ascii=False), row["id"]]
        await client.execute_query(update, values)


#: The indexes of ``generations`` as migrations 0001-0007 made them. On SQLite, removing a column
#: rebuilds the table, and Tortoise's rebuild leaves its indexes behind: they are made again.
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
