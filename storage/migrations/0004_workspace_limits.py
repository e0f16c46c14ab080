import functools
from json import dumps, loads

from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("models", "0003_moderation")]

    initial = False

    operations = [
        ops.AlterModelOptions(
            name="WorkspaceRow",
            options={
                "table": "workspaces",
                "app": "models",
                "unique_together": (("platform", "workspace"),),
                "pk_attr": "id",
                "table_description": "Per-workspace switches set by its admins: whether its queue is paused, and the member",
            },
        ),
        ops.AddField(
            model_name="WorkspaceRow",
            name="limits",
            field=fields.JSONField(
                null=True, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
            ),
        ),
    ]
