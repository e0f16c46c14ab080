"""The :class:`~bot.ports.ModerationStore` on Tortoise: bans, blocked terms, paused workspaces and
the audit log, each scoped to one workspace (a Slack workspace, a Discord guild, the local chat)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from bot.models import Actor, AuditEntry, Ban
from bot.moderation import BlockedTerm
from storage.models import AuditRow, BanRow, BlockedTermRow, WorkspaceRow
from storage.reconnect import insert_once, reconnecting, retries_inside, with_retries


def _ban(row: BanRow) -> Ban:
    return Ban(
        platform=row.platform,
        workspace=row.workspace,
        user_id=row.user_id,
        reason=row.reason,
        created_by=row.created_by,
        created_at=row.created_at,
        expires_at=row.expires_at,
    )


def _in_force() -> Q:
    return Q(expires_at=None) | Q(expires_at__gt=datetime.now(UTC))


@reconnecting
class TortoiseModerationStore:
    async def get_ban(self, platform: str, workspace: str, user_id: str) -> Ban | None:
        row = await BanRow.filter(
            _in_force(), platform=platform, workspace=workspace, user_id=user_id
        ).first()
        return _ban(row) if row else None

    async def put_ban(self, ban: Ban) -> None:
        await BanRow.update_or_create(
            platform=ban.platform,
            workspace=ban.workspace,
            user_id=ban.user_id,
            defaults={
                "reason": ban.reason,
                "created_by": ban.created_by,
                "created_at": ban.created_at,
                "expires_at": ban.expires_at,
            },
        )

    async def delete_ban(self, platform: str, workspace: str, user_id: str) -> bool:
        # An expired ban is no ban: unbanning a member whose ban ran out says "was not banned".
        in_force = await BanRow.filter(
            _in_force(), platform=platform, workspace=workspace, user_id=user_id
        ).exists()
        await BanRow.filter(platform=platform, workspace=workspace, user_id=user_id).delete()
        return in_force

    async def list_bans(self, platform: str, workspace: str | None) -> list[Ban]:
        query = BanRow.filter(_in_force(), platform=platform)
        if workspace is not None:
            query = query.filter(workspace=workspace)
        return [_ban(row) for row in await query.order_by("id")]

    async def all_bans(self) -> list[Ban]:
        return [_ban(row) for row in await BanRow.filter(_in_force()).order_by("id")]

    async def add_term(self, platform: str, workspace: str, term: BlockedTerm, created_by: str) -> bool:
        try:
            await BlockedTermRow.create(
                platform=platform,
                workspace=workspace,
                term=term.term,
                normalized=term.normalized,
                whole_word=term.whole_word,
                created_by=created_by,
            )
        except IntegrityError:
            return False
        return True

    async def remove_term(self, platform: str, workspace: str, normalized: str) -> bool:
        deleted = await BlockedTermRow.filter(
            platform=platform, workspace=workspace, normalized=normalized
        ).delete()
        return deleted > 0

    async def list_terms(self, platform: str, workspace: str) -> list[BlockedTerm]:
        rows = await BlockedTermRow.filter(platform=platform, workspace=workspace).order_by("id")
        return [BlockedTerm(r.term, r.normalized, r.whole_word) for r in rows]

    async def set_paused(self, platform: str, workspace: str, paused: bool, by: str) -> bool:
        now = datetime.now(UTC)
        changed = await WorkspaceRow.filter(platform=platform, workspace=workspace, paused=not paused).update(
            paused=paused, changed_by=by, changed_at=now
        )
        if changed:
            return True
        if await WorkspaceRow.filter(platform=platform, workspace=workspace).exists():
            return False
        try:
            await WorkspaceRow.create(
                platform=platform, workspace=workspace, paused=paused, changed_by=by, changed_at=now
            )
        except IntegrityError:  # created concurrently: try the update once more
            return await self.set_paused(platform, workspace, paused, by)
        return paused  # a new row that is not paused changed nothing

    async def get_limits(self, platform: str, workspace: str) -> dict[str, int]:
        row = await WorkspaceRow.filter(platform=platform, workspace=workspace).first()
        return dict(row.limits or {}) if row else {}

    async def set_limits(
        self, platform: str, workspace: str, changes: dict[str, int | None], by: str
    ) -> dict[str, int]:
        async with in_transaction():
            row, _created = await WorkspaceRow.get_or_create(platform=platform, workspace=workspace)
            row = await WorkspaceRow.select_for_update().get(id=row.id)
            limits = {k: v for k, v in {**(row.limits or {}), **changes}.items() if v is not None}
            row.limits = limits
            row.changed_by = by
            row.changed_at = datetime.now(UTC)
            await row.save(update_fields=["limits", "changed_by", "changed_at"])
        return limits

    async def get_backend(self, platform: str, workspace: str) -> str | None:
        found = await WorkspaceRow.filter(platform=platform, workspace=workspace).values_list(
            "backend", flat=True
        )
        return str(found[0]) if found and found[0] else None

    async def set_backend(self, platform: str, workspace: str, backend: str | None, by: str) -> None:
        now = datetime.now(UTC)
        async with in_transaction():
            row, _created = await WorkspaceRow.get_or_create(platform=platform, workspace=workspace)
            await WorkspaceRow.filter(id=row.id).update(backend=backend, changed_by=by, changed_at=now)

    async def paused_workspaces(self) -> list[tuple[str, str]]:
        rows = await WorkspaceRow.filter(paused=True).values_list("platform", "workspace")
        return [(str(p), str(w)) for p, w in rows]

    @retries_inside
    async def audit(
        self,
        actor: Actor,
        action: str,
        *,
        target: str | None = None,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        key = uuid.uuid4().hex  # one per entry, across the retries: never two rows for one action
        await with_retries(
            lambda: insert_once(
                AuditRow,
                key,
                platform=actor.platform,
                workspace=actor.workspace,
                actor_id=actor.user_id,
                actor_name=actor.display_name,
                action=action,
                target=target,
                reason=reason,
                details=details or {},
            ),
            "audit",
        )

    async def list_audit(self, platform: str, workspace: str, limit: int) -> list[AuditEntry]:
        rows = await AuditRow.filter(platform=platform, workspace=workspace).order_by("-id").limit(limit)
        return [
            AuditEntry(
                r.actor_id, r.actor_name, r.action, r.target, r.reason, dict(r.details or {}), r.created_at
            )
            for r in rows
        ]
