from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from bot.models import State
from json import dumps, loads
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name='ChatMessageRow',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('author_id', fields.CharField(max_length=64)),
                ('author_name', fields.CharField(max_length=100)),
                ('bot', fields.BooleanField(default=False)),
                ('text', fields.TextField(null=True, unique=False)),
                ('status', fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('ephemeral_to', fields.CharField(null=True, max_length=64)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('edited_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'chat_messages', 'app': 'models', 'pk_attr': 'id', 'table_description': 'A message of the local web chat, so that its history survives a restart.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='GenerationRow',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('platform', fields.CharField(max_length=16)),
                ('workspace', fields.CharField(max_length=64)),
                ('channel', fields.CharField(max_length=64)),
                ('user_id', fields.CharField(max_length=64)),
                ('user_name', fields.CharField(max_length=100)),
                ('prompt', fields.TextField(unique=False)),
                ('negative', fields.TextField(unique=False)),
                ('options', fields.JSONField(encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('backend', fields.CharField(max_length=100)),
                ('state', fields.CharEnumField(default=State.QUEUED, description='QUEUED: queued\nRUNNING: running\nSUCCEEDED: succeeded\nFAILED: failed\nTIMED_OUT: timed_out\nCANCELLED: cancelled', enum_type=State, max_length=16)),
                ('error_code', fields.CharField(null=True, max_length=32)),
                ('attempts', fields.IntField(default=0)),
                ('ticket', fields.BigIntField(null=True)),
                ('result_key', fields.CharField(null=True, max_length=200)),
                ('message', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('meta', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('version', fields.IntField(default=0)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('started_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('heartbeat_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('finished_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'generations', 'app': 'models', 'indexes': [Index(fields=['state', 'heartbeat_at'], name='generations_state_heartbeat'), Index(fields=['platform', 'state'], name='generations_platform_state'), Index(fields=['platform', 'workspace', 'user_id', 'state'], name='generations_user_state'), Index(fields=['platform', 'finished_at'], name='generations_platform_finished')], 'pk_attr': 'id', 'table_description': 'One request: the source of truth. ``message`` and ``meta`` hold everything its status message'},
            bases=['Model'],
        ),
    ]
