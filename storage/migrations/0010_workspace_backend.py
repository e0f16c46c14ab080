from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("models", "0009_blobs")]

    initial = False

    operations = [
        ops.AddField(
            model_name="WorkspaceRow",
            name="backend",
            field=fields.CharField(null=True, max_length=100),
        ),
    ]
