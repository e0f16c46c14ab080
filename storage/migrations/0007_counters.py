from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("models", "0006_inbox")]

    initial = False

    operations = [
        ops.CreateModel(
            name="CounterRow",
            fields=[
                ("name", fields.CharField(primary_key=True, unique=True, db_index=True, max_length=32)),
                ("value", fields.BigIntField()),
            ],
            options={
                "table": "counters",
                "app": "models",
                "pk_attr": "name",
                "table_description": "A number that only grows, kept in the database: ``ticket_epoch`` counts the seeds of",
            },
            bases=["Model"],
        ),
    ]
