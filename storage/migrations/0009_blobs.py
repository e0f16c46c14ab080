from tortoise import fields, migrations
from tortoise.indexes import Index
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("models", "0008_job_kinds")]

    initial = False

    operations = [
        ops.CreateModel(
            name="BlobRow",
            fields=[
                ("key", fields.CharField(primary_key=True, unique=True, db_index=True, max_length=255)),
                ("data", fields.BinaryField()),
                ("size", fields.IntField()),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "blobs",
                "app": "models",
                "indexes": [Index(fields=["created_at"], name="blobs_created")],
                "pk_attr": "key",
                "table_description": "A blob (an image, a preview, a file a member attached) kept in the database, so that every",
            },
            bases=["Model"],
        ),
    ]
