from tortoise import fields, migrations
from tortoise.indexes import Index
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("models", "0004_workspace_limits")]

    initial = False

    operations = [
        ops.AddField(
            model_name="AuditRow",
            name="request_key",
            field=fields.CharField(null=True, unique=True, max_length=64),
        ),
        ops.AddField(
            model_name="ChatMessageRow",
            name="request_key",
            field=fields.CharField(null=True, unique=True, max_length=64),
        ),
        ops.AddField(
            model_name="GenerationRow",
            name="request_key",
            field=fields.CharField(
                null=True,
                unique=True,
                description="The idempotency key of the request that made the row: a retried INSERT cannot make a second.",
                max_length=64,
            ),
        ),
        ops.AddIndex(
            model_name="GenerationRow",
            index=Index(fields=["ticket"], name="generations_ticket"),
        ),
    ]
