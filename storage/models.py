"""Tortoise models. Schema changes go through ``storage/migrations`` (``genbot migrate``)."""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.indexes import Index
from tortoise.models import Model

from bot.models import State


class GenerationRow(Model):
    """One request: the source of truth. ``message`` and ``meta`` hold everything its status message
    shows (message refs, position at submit, progress, preview, ETA, last rendered hash)."""

    id = fields.BigIntField(primary_key=True)
    platform = fields.CharField(max_length=16)
    workspace = fields.CharField(max_length=64)
    channel = fields.CharField(max_length=64)
    user_id = fields.CharField(max_length=64)
    user_name = fields.CharField(max_length=100)
    #: The job kind (a plugin's) that runs the row.
    kind = fields.CharField(max_length=32, default="imagine", db_default="imagine")
    #: The job's text, as its status message quotes it (a prompt, a question).
    prompt = fields.TextField()
    options: fields.JSONField[dict[str, Any]] = fields.JSONField()
    backend = fields.CharField(max_length=100)
    state = fields.CharEnumField(State, max_length=16, default=State.QUEUED)
    error_code = fields.CharField(max_length=32, null=True)
    attempts = fields.IntField(default=0)
    ticket = fields.BigIntField(null=True)
    result_key = fields.CharField(max_length=200, null=True)
    message: fields.JSONField[dict[str, Any]] = fields.JSONField(default=dict)
    meta: fields.JSONField[dict[str, Any]] = fields.JSONField(default=dict)
    version = fields.IntField(default=0)
    #: The idempotency key of the request that made the row: a retried INSERT cannot make a second.
    request_key = fields.CharField(max_length=64, null=True, unique=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    started_at = fields.DatetimeField(null=True)
    heartbeat_at = fields.DatetimeField(null=True)
    finished_at = fields.DatetimeField(null=True)

    class Meta:
        table = "generations"
        indexes = (
            Index(fields=("state", "heartbeat_at"), name="generations_state_heartbeat"),
            Index(fields=("platform", "state"), name="generations_platform_state"),
            Index(fields=("platform", "workspace", "user_id", "state"), name="generations_user_state"),
            Index(fields=("platform", "finished_at"), name="generations_platform_finished"),
            Index(fields=("platform", "workspace", "created_at"), name="generations_workspace_created"),
            # MAX(ticket): where tickets start again after Redis lost its counter.
            Index(fields=("ticket",), name="generations_ticket"),
        )


class ChatMessageRow(Model):
    """A message of the local web chat, so that its history survives a restart."""

    id = fields.BigIntField(primary_key=True)
    author_id = fields.CharField(max_length=64)
    author_name = fields.CharField(max_length=100)
    bot = fields.BooleanField(default=False)
    text = fields.TextField(null=True)
    status: fields.JSONField[dict[str, Any] | None] = fields.JSONField(null=True)
    ephemeral_to = fields.CharField(max_length=64, null=True)
    request_key = fields.CharField(max_length=64, null=True, unique=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    edited_at = fields.DatetimeField(null=True)

    class Meta:
        table = "chat_messages"


class BanRow(Model):
    """A member who may not submit in one workspace, until ``expires_at`` (None: until unbanned)."""

    id = fields.BigIntField(primary_key=True)
    platform = fields.CharField(max_length=16)
    workspace = fields.CharField(max_length=64)
    user_id = fields.CharField(max_length=64)
    reason = fields.TextField()
    created_by = fields.CharField(max_length=64)
    created_at = fields.DatetimeField(auto_now_add=True)
    expires_at = fields.DatetimeField(null=True)

    class Meta:
        table = "bans"
        unique_together = (("platform", "workspace", "user_id"),)


class BlockedTermRow(Model):
    """A term prompts of one workspace may not contain (``normalized`` is what matching compares)."""

    id = fields.BigIntField(primary_key=True)
    platform = fields.CharField(max_length=16)
    workspace = fields.CharField(max_length=64)
    term = fields.CharField(max_length=100)
    normalized = fields.CharField(max_length=100)
    whole_word = fields.BooleanField(default=True)
    created_by = fields.CharField(max_length=64)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "blocked_terms"
        unique_together = (("platform", "workspace", "normalized"),)


class WorkspaceRow(Model):
    """Per-workspace switches set by its admins: whether its queue is paused, the member limits
    it sets for itself (``limits``, setting name to value; null: the deployment's) and the backend
    its jobs run on (``backend``; null: the deployment's default)."""

    id = fields.BigIntField(primary_key=True)
    platform = fields.CharField(max_length=16)
    workspace = fields.CharField(max_length=64)
    paused = fields.BooleanField(default=False)
    limits: fields.JSONField[dict[str, Any] | None] = fields.JSONField(null=True)
    backend = fields.CharField(max_length=100, null=True)
    changed_by = fields.CharField(max_length=64, null=True)
    changed_at = fields.DatetimeField(null=True)

    class Meta:
        table = "workspaces"
        unique_together = (("platform", "workspace"),)


class AuditRow(Model):
    """One admin action: who, what, when, on what, and why."""

    id = fields.BigIntField(primary_key=True)
    platform = fields.CharField(max_length=16)
    workspace = fields.CharField(max_length=64)
    actor_id = fields.CharField(max_length=64)
    actor_name = fields.CharField(max_length=100)
    action = fields.CharField(max_length=32)
    target = fields.CharField(max_length=200, null=True)
    reason = fields.TextField(null=True)
    details: fields.JSONField[dict[str, Any]] = fields.JSONField(default=dict)
    request_key = fields.CharField(max_length=64, null=True, unique=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "audit_log"
        indexes = (Index(fields=("platform", "workspace", "created_at"), name="audit_workspace_time"),)


class InboxRow(Model):
    """A command a bot acknowledged and has not finished: written before the platform hears the
    ack, deleted when the command is done. A bot that dies leaves its rows behind, and another
    bot of the platform runs those commands again (``Genbot.revive_commands``)."""

    id = fields.BigIntField(primary_key=True)
    request_key = fields.CharField(max_length=64, unique=True)
    platform = fields.CharField(max_length=16)
    #: What the adapter needs to run the command again: the request as the platform sent it, and
    #: where to answer (a Slack response_url, a Discord interaction token: secrets that expire).
    payload: fields.JSONField[dict[str, Any]] = fields.JSONField()
    created_at = fields.DatetimeField(auto_now_add=True)
    claimed_at = fields.DatetimeField(null=True)

    class Meta:
        table = "inbox"
        indexes = (Index(fields=("platform", "created_at"), name="inbox_platform_created"),)


class CounterRow(Model):
    """A number that only grows, kept in the database: ``ticket_epoch`` counts the seeds of
    Redis's ticket counter (``Genbot.seed_tickets``)."""

    name = fields.CharField(max_length=32, primary_key=True)
    value = fields.BigIntField()

    class Meta:
        table = "counters"


class BlobRow(Model):
    """A blob (an image, a preview, a file a member attached) kept in the database, so that every
    bot and worker reads what any of them wrote (:class:`storage.blobs.DatabaseBlobStore`)."""

    key = fields.CharField(max_length=255, primary_key=True)
    data = fields.BinaryField()
    size = fields.IntField()
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "blobs"
        indexes = (Index(fields=("created_at",), name="blobs_created"),)
