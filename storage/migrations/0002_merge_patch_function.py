"""PostgreSQL: install ``genbot_merge_patch`` (recursive JSON merge, see storage/merge.py).

SQLite needs nothing: its built-in ``json_patch`` has the same semantics.
"""

from typing import Any

from tortoise import migrations
from tortoise.migrations import operations as ops

from storage.merge import PG_DROP_MERGE_FUNCTION, PG_MERGE_FUNCTION, is_postgres


async def install(_apps: Any, schema_editor: Any) -> None:
    if is_postgres(schema_editor.client):
        await schema_editor.client.execute_script(PG_MERGE_FUNCTION)


async def uninstall(_apps: Any, schema_editor: Any) -> None:
    if is_postgres(schema_editor.client):
        await schema_editor.client.execute_script(PG_DROP_MERGE_FUNCTION)


class Migration(migrations.Migration):
    dependencies = [("models", "0001_initial")]

    initial = False

    operations = [ops.RunPython(install, uninstall)]
