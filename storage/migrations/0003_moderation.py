import functools
from json import dumps, loads

from tortoise import fields, migrations
from tortoise.indexes import Index
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("models", "0002_merge_patch_function")]

    initial = False

    operations = [
        ops.CreateModel(
            name="AuditRow",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("platform", fields.CharField(max_length=16)),
                ("workspace", fields.CharField(max_length=64)),
                ("actor_id", fields.CharField(max_length=64)),
                ("actor_name", fields.CharField(max_length=100)),
                ("action", fields.CharField(max_length=32)),
                ("target", fields.CharField(null=True, max_length=200)),
                ("reason", fields.TextField(null=True, unique=False)),
                (
                    "details",
                    fields.JSONField(
                        default=dict, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
                    ),
                ),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "audit_log",
                "app": "models",
                "indexes": [
                    Index(fields=["platform", "workspace", "created_at"], name="audit_workspace_time")
                ],
                "pk_attr": "id",
                "table_description": "One admin action: who, what, when, on what, and why.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="BanRow",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("platform", fields.CharField(max_length=16)),
                ("workspace", fields.CharField(max_length=64)),
                ("user_id", fields.CharField(max_length=64)),
                ("reason", fields.TextField(unique=False)),
                ("created_by", fields.CharField(max_length=64)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ("expires_at", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={
                "table": "bans",
                "app": "models",
                "unique_together": (("platform", "workspace", "user_id"),),
                "pk_attr": "id",
                "table_description": "A member who may not submit in one workspace, until ``expires_at`` (None: until unbanned).",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="BlockedTermRow",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("platform", fields.CharField(max_length=16)),
                ("workspace", fields.CharField(max_length=64)),
                ("term", fields.CharField(max_length=100)),
                ("normalized", fields.CharField(max_length=100)),
                ("whole_word", fields.BooleanField(default=True)),
                ("created_by", fields.CharField(max_length=64)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "blocked_terms",
                "app": "models",
                "unique_together": (("platform", "workspace", "normalized"),),
                "pk_attr": "id",
                "table_description": "A term prompts of one workspace may not contain (``normalized`` is what matching compares).",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="WorkspaceRow",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("platform", fields.CharField(max_length=16)),
                ("workspace", fields.CharField(max_length=64)),
                ("paused", fields.BooleanField(default=False)),
                ("changed_by", fields.CharField(null=True, max_length=64)),
                ("changed_at", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={
                "table": "workspaces",
                "app": "models",
                "unique_together": (("platform", "workspace"),),
                "pk_attr": "id",
                "table_description": "Per-workspace switches set by its admins (for now: whether its queue is paused).",
            },
            bases=["Model"],
        ),
        ops.AddIndex(
            model_name="GenerationRow",
            index=Index(fields=["platform", "workspace", "created_at"], name="generations_workspace_created"),
        ),
    ]
