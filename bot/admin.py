"""The admin commands (``/admin ...``): bans, blocked terms, pause and resume, cancel and clear, the
whole queue, stats and the audit log. Every one is for admins only (checked here, on the server,
for every call) and every change writes an audit row.

Each command acts in the admin's own workspace (Slack workspace, Discord guild, the local chat):
an admin of one server can neither see nor change another's queue, bans or terms.
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from bot.commands import MEMBER_MAX, CommandSpec, check_known, parse_int
from bot.errors import ErrorCode, GenbotError
from bot.models import Actor, Ban, CommandRequest, Generation, State
from bot.moderation import blocked_term, format_span, member_of, normalize, parse_duration
from bot.text import is_visible
from bot.views import format_duration

if TYPE_CHECKING:
    from bot.service import Genbot

log = logging.getLogger(__name__)

#: Lines of a listing before "and N more".
LIST_MAX = 25
TERM_MAX = 100
#: The longest reason an admin may give (it is stored and shown in the audit log).
REASON_MAX = 500


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _ago(moment: datetime | None) -> str:
    if moment is None:
        return "?"
    return format_duration(max(0.0, (datetime.now(UTC) - moment).total_seconds())) + " ago"


def _short(text: str, limit: int = 50) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _line(where: str, gen: Generation, age: str) -> str:
    return f"• {where} · job {gen.id} · {gen.user_name} · {age} · {_short(gen.prompt)}"


class Admin:
    def __init__(self, core: Genbot) -> None:
        self.core = core
        self.store = core.store
        self.moderation = core.moderation
        self.queue = core.queue

    async def run(self, spec: CommandSpec, request: CommandRequest) -> str:
        """Run ``/admin <spec.name>``; returns the reply for the admin. Raises
        :class:`GenbotError` (not_allowed for members, invalid_option for bad input)."""
        actor = request.actor
        if not actor.is_admin:
            raise GenbotError(
                ErrorCode.NOT_ALLOWED,
                f"Only admins can use /{spec.key}; you are not an admin here.",
                todo="Ask one of this server's admins if something needs doing.",
            )
        check_known(spec, request.options)
        options = {k: v.strip() for k, v in request.options.items()}
        reason = options.get("reason") or None
        if reason is not None and not is_visible(reason):
            reason = None  # nothing but invisible marks: no reason given
        if reason is not None and len(reason) > REASON_MAX:
            raise GenbotError(ErrorCode.INVALID_OPTION, f"A reason is at most {REASON_MAX} characters long.")
        handler = getattr(self, f"_{spec.name}")
        reply: str = await handler(actor, spec, options, reason)
        return reply

    # -- members --------------------------------------------------------------------------------

    def _target(self, actor: Actor, options: dict[str, str]) -> str:
        target = member_of(options.get("member", ""))
        if target is None or len(target) > MEMBER_MAX or not is_visible(target):
            raise GenbotError(ErrorCode.INVALID_OPTION, "Say which member, for example @ana.")
        return target

    async def _ban(
        self, actor: Actor, _spec: CommandSpec, options: dict[str, str], reason: str | None
    ) -> str:
        target = self._target(actor, options)
        if target == actor.user_id:
            raise GenbotError(ErrorCode.INVALID_OPTION, "You can't ban yourself.")
        duration = None
        if options.get("duration"):
            duration = parse_duration(options["duration"])
            if duration is None:
                raise GenbotError(
                    ErrorCode.INVALID_OPTION,
                    "Duration must look like 30m, 2h, 7d or 1w, at most ten years (or be left out).",
                )
        jobs = (options.get("jobs") or "cancel").lower()
        if jobs not in ("cancel", "keep"):
            raise GenbotError(ErrorCode.INVALID_OPTION, "Jobs must be cancel or keep.")
        now = datetime.now(UTC)
        expires = now + duration if duration else None
        await self.core.ban(
            Ban(actor.platform, actor.workspace, target, reason or "", actor.user_id, now, expires)
        )
        cancelled: list[int] = []
        if jobs == "cancel":
            for gen in await self.store.list_for_user(
                actor.platform, actor.workspace, target, [State.QUEUED]
            ):
                if await self.core.cancel_row(gen, ErrorCode.CANCELLED_BY_ADMIN):
                    cancelled.append(gen.id)
        await self.moderation.audit(
            actor,
            "ban",
            target=target,
            reason=reason,
            details={
                "duration_s": int(duration.total_seconds()) if duration else None,
                "jobs": jobs,
                "cancelled": cancelled,
            },
        )
        until = (
            f"for {format_span(duration)} (until {_when(expires)})"
            if duration and expires
            else "until unbanned"
        )
        kept = (
            f" Cancelled {len(cancelled)} queued job(s)."
            if jobs == "cancel"
            else " Their queued jobs stay in the queue."
        )
        return f"Banned member {target} {until}.{kept}"

    async def _unban(
        self, actor: Actor, _spec: CommandSpec, options: dict[str, str], reason: str | None
    ) -> str:
        target = self._target(actor, options)
        removed = await self.core.unban(actor.platform, actor.workspace, target)
        if not removed:
            raise GenbotError(ErrorCode.NOT_FOUND, f"Member {target} is not banned here.")
        await self.moderation.audit(actor, "unban", target=target, reason=reason)
        return f"Member {target} may make images again."

    async def _bans(self, actor: Actor, *_: object) -> str:
        bans = await self.moderation.list_bans(actor.platform, actor.workspace)
        if not bans:
            return "Nobody is banned here."
        lines = [f"Banned members ({len(bans)}):"]
        for ban in bans[:LIST_MAX]:
            until = f"until {_when(ban.expires_at)}" if ban.expires_at else "until unbanned"
            why = f" · {_short(ban.reason)}" if ban.reason else ""
            lines.append(f"• {ban.user_id} · {until} · by {ban.created_by}{why}")
        if len(bans) > LIST_MAX:
            lines.append(f"… and {len(bans) - LIST_MAX} more")
        return "\n".join(lines)

    # -- blocked terms --------------------------------------------------------------------------

    async def _block(
        self, actor: Actor, _spec: CommandSpec, options: dict[str, str], reason: str | None
    ) -> str:
        raw = " ".join(options.get("term", "").split())
        match = (options.get("match") or "word").lower()
        if match not in ("word", "substring"):
            raise GenbotError(ErrorCode.INVALID_OPTION, "Match must be word or substring.")
        if len(raw) > TERM_MAX:
            raise GenbotError(ErrorCode.INVALID_OPTION, f"A term is at most {TERM_MAX} characters long.")
        term = blocked_term(raw, whole_word=match == "word")
        if len(term.normalized) < 2:
            raise GenbotError(ErrorCode.INVALID_OPTION, "Give a term of at least two letters or digits.")
        if len(term.normalized) > TERM_MAX:  # compatibility forms can expand: "ﷺ" is 18 letters
            raise GenbotError(ErrorCode.INVALID_OPTION, f"A term is at most {TERM_MAX} characters long.")
        if not await self.moderation.add_term(actor.platform, actor.workspace, term, actor.user_id):
            raise GenbotError(ErrorCode.INVALID_OPTION, f"“{raw}” is already blocked here.")
        self.core.forget_terms(actor.platform, actor.workspace)
        await self.moderation.audit(
            actor, "block", target=raw, reason=reason, details={"match": match, "normalized": term.normalized}
        )
        how = "as a whole word" if term.whole_word else "anywhere in a prompt"
        return f"Blocked “{raw}” {how} (also in other cases, with accents or look-alike letters)."

    async def _unblock(
        self, actor: Actor, _spec: CommandSpec, options: dict[str, str], reason: str | None
    ) -> str:
        raw = " ".join(options.get("term", "").split())
        if len(raw) > TERM_MAX:
            raise GenbotError(ErrorCode.INVALID_OPTION, f"A term is at most {TERM_MAX} characters long.")
        removed = await self.moderation.remove_term(actor.platform, actor.workspace, normalize(raw))
        self.core.forget_terms(actor.platform, actor.workspace)
        if not removed:
            raise GenbotError(
                ErrorCode.NOT_FOUND, f"“{_short(raw)}” is not blocked here. /admin terms lists them."
            )
        await self.moderation.audit(actor, "unblock", target=raw, reason=reason)
        return f"“{raw}” is allowed again."

    async def _terms(self, actor: Actor, *_: object) -> str:
        terms = await self.moderation.list_terms(actor.platform, actor.workspace)
        if not terms:
            return "No terms are blocked here. Add one with /admin block."
        lines = [f"Blocked terms ({len(terms)}):"]
        lines += [f"• {t.term} ({'whole word' if t.whole_word else 'substring'})" for t in terms[:LIST_MAX]]
        if len(terms) > LIST_MAX:
            lines.append(f"… and {len(terms) - LIST_MAX} more")
        return "\n".join(lines)

    # -- the queue ------------------------------------------------------------------------------

    async def _pause(
        self, actor: Actor, _spec: CommandSpec, _options: dict[str, str], reason: str | None
    ) -> str:
        held = await self.core.pause(actor, paused=True)
        if held is None:
            raise GenbotError(
                ErrorCode.INVALID_OPTION, "The queue is already paused. /admin resume restarts it."
            )
        await self.moderation.audit(actor, "pause", reason=reason, details={"queued": held})
        return (
            f"Paused the queue. {held} queued job(s) keep their place and wait; new requests are "
            "refused until /admin resume. Jobs already running finish."
        )

    async def _resume(
        self, actor: Actor, _spec: CommandSpec, _options: dict[str, str], reason: str | None
    ) -> str:
        released = await self.core.pause(actor, paused=False)
        if released is None:
            raise GenbotError(ErrorCode.INVALID_OPTION, "The queue is not paused.")
        await self.moderation.audit(actor, "resume", reason=reason, details={"queued": released})
        return f"Resumed the queue: {released} queued job(s) go on in their order."

    async def _cancel(
        self, actor: Actor, spec: CommandSpec, options: dict[str, str], reason: str | None
    ) -> str:
        job = parse_int(spec, "job", options.get("job"))
        if job is None:
            raise GenbotError(ErrorCode.INVALID_OPTION, "Say which job: /admin cancel 12.")
        gen = await self.core.cancel(actor, job, reason=reason, audit=False)
        await self.moderation.audit(
            actor, "cancel", target=f"job {gen.id}", reason=reason, details={"member": gen.user_id}
        )
        return f"Cancelled job {gen.id} of {gen.user_name}."

    async def _clear(
        self, actor: Actor, _spec: CommandSpec, options: dict[str, str], reason: str | None
    ) -> str:
        queued = await self.store.list_workspace(actor.platform, actor.workspace, [State.QUEUED])
        given = options.get("confirm")
        ttl = self.core.settings.moderation.confirm_s
        if not given:
            if not queued:
                return "The queue is empty: nothing to clear."
            code = f"{secrets.randbelow(10_000):04d}"
            await self.queue.set_confirm(actor.member, "clear", code, ttl)
            return (
                f"This cancels all {len(queued)} queued job(s) here (running jobs go on). To go ahead, run "
                f"/admin clear confirm: {code} within {format_duration(ttl)}."
            )
        expected = await self.queue.take_confirm(actor.member, "clear")
        # compare_digest refuses str with non-ASCII characters: compare the bytes
        if expected is None or not secrets.compare_digest(expected.encode(), given.encode()):
            raise GenbotError(
                ErrorCode.INVALID_OPTION,
                "That confirmation code is wrong or has expired. Run /admin clear again for a new one.",
            )
        cancelled = [g.id for g in queued if await self.core.cancel_row(g, ErrorCode.CANCELLED_BY_ADMIN)]
        await self.moderation.audit(actor, "clear", reason=reason, details={"cancelled": cancelled})
        return f"Cleared the queue: cancelled {len(cancelled)} job(s)."

    async def _limits(
        self, actor: Actor, spec: CommandSpec, options: dict[str, str], reason: str | None
    ) -> str:
        """Show the member limits, or set this workspace's own (0: back to the deployment's)."""
        changes: dict[str, int | None] = {}
        for option, setting, scale in (
            ("queued", "max_queued", 1),
            ("rate", "rate_count", 1),
            ("window", "rate_window_s", 60),
        ):
            value = parse_int(spec, option, options.get(option))
            if value is not None:
                changes[setting] = value * scale if value else None
        own = await self.moderation.get_limits(actor.platform, actor.workspace)
        if changes:
            own = await self.moderation.set_limits(actor.platform, actor.workspace, changes, actor.user_id)
            self.core.forget_limits(actor.platform, actor.workspace)
            await self.moderation.audit(actor, "limits", reason=reason, details={"set": changes, "now": own})
        quota = self.core.quota_for(actor, own)

        def mark(setting: str) -> str:
            return "set here" if setting in own else "default"

        return "\n".join(
            [
                "Member limits here:" if not changes else "Member limits here, now:",
                f"• waiting jobs per member: {quota.max_queued} ({mark('max_queued')})",
                f"• requests per member: {quota.rate_count} per {format_duration(quota.rate_window_s)} "
                f"({mark('rate_count')}; window {mark('rate_window_s')})",
                f"• running jobs per member: {quota.max_running}, waiting jobs per line: {quota.global_max} "
                "(for every server of this bot)",
            ]
        )

    async def _backend(
        self, actor: Actor, _spec: CommandSpec, options: dict[str, str], reason: str | None
    ) -> str:
        """Show the backend this workspace's jobs run on, or choose it (``default``: the
        deployment's). Jobs already queued stay in the line they are in."""
        offered = self.core.plugins.choosable_backends()
        kinds = [kind for kind, _loaded in self.core.plugins.kinds.values() if len(kind.lines) > 1]
        if not offered:
            return "This bot runs every job on one backend: there is nothing to choose."
        default = kinds[0].backend_name
        wanted = options.get("name")
        chosen = await self.moderation.get_backend(actor.platform, actor.workspace)
        if wanted:
            same = [b for b in offered if b.lower() == wanted.lower()]
            new = None if wanted.lower() == "default" else same[0] if same else ""
            if new == "":
                raise GenbotError(
                    ErrorCode.INVALID_OPTION, f"The backends are {', '.join(offered)} (or default)."
                )
            await self.moderation.set_backend(actor.platform, actor.workspace, new, actor.user_id)
            self.core.forget_backend(actor.platform, actor.workspace)
            await self.moderation.audit(actor, "backend", target=new or "default", reason=reason)
            chosen = new
            which = chosen or f"{default} (the default)"
            return f"New jobs here now run on {which}; jobs already queued keep their place."
        now = chosen if chosen in offered else None
        said = f"{now} (chosen here)" if now else f"{default} (the default)"
        return f"Jobs here run on {said}. The backends: {', '.join(offered)}."

    async def _queue(self, actor: Actor, *_: object) -> str:
        gens = await self.store.list_workspace(actor.platform, actor.workspace, [State.QUEUED, State.RUNNING])
        if not gens:
            return "The queue is empty."
        paused = await self.queue.is_paused(actor.platform, actor.workspace)
        running = [g for g in gens if g.state is State.RUNNING]
        order: dict[int, int] = {}  # ticket order, across the lines
        positions: dict[int, int] = {}  # place in its own line
        ahead: dict[str, int] = {}
        for index, (gid, line) in enumerate(await self.queue.lined_up()):  # one read
            order[gid] = index
            positions[gid] = ahead[line] = ahead.get(line, 0) + 1
        in_line = [g for g in gens if g.state is State.QUEUED]
        placed = sorted(
            ((positions[g.id], g) for g in in_line if g.id in positions), key=lambda p: order[p[1].id]
        )
        waiting_aside = [g for g in in_line if g.id not in positions]
        # With several lines, each place says whose line it is in.
        several = bool(self.core.plugins.choosable_backends()) or len({g.backend for g in gens}) > 1
        queued = len(placed) + len(waiting_aside)
        lines = [f"The queue{' (paused)' if paused else ''}: {len(running)} running, {queued} queued."]
        for gen in running:
            progress = gen.meta.get("progress") or {}
            step, total = progress.get("step"), progress.get("total")
            shown = f" {round(100 * step / total)}%" if isinstance(step, int) and total else ""
            lines.append(_line(f"running{shown}", gen, f"started {_ago(gen.started_at)}"))
        for position, gen in placed:
            lines.append(
                _line(
                    f"#{position} for {gen.backend}" if several else f"#{position}", gen, _ago(gen.created_at)
                )
            )
        for gen in waiting_aside:
            lines.append(_line(await self.queue.aside(gen) or "starting", gen, _ago(gen.created_at)))
        if len(lines) > LIST_MAX + 1:
            lines = [*lines[: LIST_MAX + 1], f"… and {len(lines) - LIST_MAX - 1} more"]
        return "\n".join(lines)

    async def _stats(self, actor: Actor, *_: object) -> str:
        since = datetime.now(UTC) - timedelta(hours=24)
        stats = await self.store.stats(actor.platform, actor.workspace, since)
        refused = await self.queue.refusals(actor.platform, actor.workspace, 24)
        lines = [
            "The last 24 hours:",
            f"• requests: {stats.submitted} ({stats.succeeded} succeeded, "
            f"{stats.active} still queued or running)",
        ]
        ended = ", ".join(f"{code} {n}" for code, n in sorted(stats.by_code.items())) or "none"
        lines.append(f"• failed or cancelled: {ended}")
        lines.append(
            f"• refused: {', '.join(f'{code} {n}' for code, n in sorted(refused.items())) or 'none'}"
        )
        wait = format_duration(stats.mean_wait_s) if stats.mean_wait_s is not None else "n/a"
        run = format_duration(stats.mean_run_s) if stats.mean_run_s is not None else "n/a"
        lines.append(f"• mean wait: {wait} · mean run: {run}")
        return "\n".join(lines)

    async def _audit(
        self, actor: Actor, spec: CommandSpec, options: dict[str, str], _reason: str | None
    ) -> str:
        limit = parse_int(spec, "limit", options.get("limit")) or 20
        entries = await self.moderation.list_audit(actor.platform, actor.workspace, limit)
        if not entries:
            return "The audit log is empty."
        lines = [f"The latest {len(entries)} admin action(s):"]
        for entry in entries:
            target = f" {entry.target}" if entry.target else ""
            why = f" · {_short(entry.reason)}" if entry.reason else ""
            lines.append(f"• {_when(entry.created_at)} · {entry.actor_name}: {entry.action}{target}{why}")
        return "\n".join(lines)
