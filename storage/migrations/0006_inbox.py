import functools
from json import dumps, loads

from tortoise import fields, migrations
from tortoise.indexes import Index
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("models", "0005_idempotent_inserts")]

    initial = False

    operations = [
        ops.CreateModel(
            name="InboxRow",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("request_key", fields.CharField(unique=True, max_length=64)),
                ("platform", fields.CharField(max_length=16)),
                (
                    "payload",
                    fields.JSONField(
                        description="What the adapter needs to run the command again: the request as the platform sent it, and",
                        encoder=functools.partial(dumps, separators=(",", ":")),
                        decoder=loads,
                    ),
                ),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ("claimed_at", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={
                "table": "inbox",
                "app": "models",
                "indexes": [Index(fields=["platform", "created_at"], name="inbox_platform_created")],
                "pk_attr": "id",
                "table_description": "A command a bot acknowledged and has not finished: written before the platform hears the",
            },
            bases=["Model"],
        ),
    ]
