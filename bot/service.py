"""The core: what a command does, independent of the platform it came from.

An adapter acks the platform, translates the payload into a :class:`CommandRequest` and calls
:meth:`Genbot.handle` with a :class:`Responder`. Everything a member sees in reply goes through the
responder; failures become catalogue words, never exception text.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from bot.commands import (
    SEED_MAX,
    CommandSpec,
    check_known,
    command_specs,
    parse_int,
    validate_imagine,
)
from bot.config import Platform, Settings
from bot.errors import ErrorCode, GenbotError, describe
from bot.models import (
    SECRET_LIFETIME_S,
    Actor,
    CommandRequest,
    Generation,
    ImagineOptions,
    MessageRef,
    NewGeneration,
    State,
    StatusView,
)
from bot.ports import PARTIAL, GenerationStore, JobQueue, Responder
from bot.views import build_view, eta_seconds, view_hash

log = logging.getLogger(__name__)


class Genbot:
    def __init__(self, settings: Settings, store: GenerationStore, queue: JobQueue) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue
        self.specs: dict[str, CommandSpec] = {s.name: s for s in command_specs(settings.limits)}

    # -- entry points -------------------------------------------------------------------------

    async def handle(self, request: CommandRequest, responder: Responder) -> None:
        """Run one command. Never raises for the member's sake: every outcome is a reply."""
        try:
            spec = self.specs.get(request.name)
            if spec is None:
                raise GenbotError(ErrorCode.INVALID_OPTION, f"There is no command /{request.name}.")
            if spec.name == "imagine":
                await self.imagine(spec, request, responder)
            elif spec.name == "queue":
                check_known(spec, request.options)
                await responder.reply(await self.describe_queue(request.actor))
            elif spec.name == "cancel":
                check_known(spec, request.options)
                job = parse_int(spec, "job", request.options.get("job"))
                gen = await self.cancel(request.actor, job)
                await responder.reply(f"Cancelled job {gen.id}.")
            elif spec.name == "status":
                check_known(spec, request.options)
                job = parse_int(spec, "job", request.options.get("job"))
                if job is None:
                    raise GenbotError(ErrorCode.INVALID_OPTION, "Say which job: /status 12.")
                await self.repost(request.actor, job, responder)
        except GenbotError as exc:
            await responder.reply_error(exc.text)
        except Exception:
            log.exception("command /%s failed", request.name)
            await responder.reply_error(describe(ErrorCode.INTERNAL))

    async def handle_action(
        self, actor: Actor, generation_id: int, action: str, responder: Responder
    ) -> None:
        """A button on a status message: ``cancel`` the job, or ``reroll`` it (the same prompt and
        options with a new seed, as a new job of the member who pressed it). Both are for the
        job's author or an admin."""
        try:
            if action == "cancel":
                gen = await self.cancel(actor, generation_id)
                await responder.reply(f"Cancelled job {gen.id}.")
            elif action == "reroll":
                await self.reroll(actor, generation_id, responder)
            else:
                raise GenbotError(ErrorCode.INVALID_OPTION, "That button does nothing any more.")
        except GenbotError as exc:
            await responder.reply_error(exc.text)
        except Exception:
            log.exception("action %s on %s failed", action, generation_id)
            await responder.reply_error(describe(ErrorCode.INTERNAL))

    # -- commands -----------------------------------------------------------------------------

    async def imagine(self, spec: CommandSpec, request: CommandRequest, responder: Responder) -> None:
        options = validate_imagine(spec, request.options, self.settings.limits)
        await self._start(request.actor, request.channel, options, responder)

    async def reroll(self, actor: Actor, generation_id: int, responder: Responder) -> None:
        """A new job with the prompt and options of ``generation_id`` and a new seed."""
        gen = await self._visible(actor, generation_id)
        if gen.user_id != actor.user_id and not actor.is_admin:
            raise GenbotError(ErrorCode.NOT_ALLOWED)
        options = gen.imagine_options(seed=secrets.randbelow(SEED_MAX + 1))
        await self._start(actor, gen.channel, options, responder)

    async def _start(self, actor: Actor, channel: str, options: ImagineOptions, responder: Responder) -> None:
        """Submit a new job and post its status message."""
        new = NewGeneration(actor=actor, channel=channel, options=options, backend=self.settings.backend.name)
        gen, position = await self.submit(new)
        view = await self.view(gen, position)
        try:
            ref = await responder.post_status(view)
        except Exception:
            # No message, no job: a job nobody can follow would only invite a duplicate.
            await self._cancel_row(gen, ErrorCode.CANCELLED)
            raise
        await self.attach_message(gen.id, ref, view, ticket=gen.ticket, position=position)

    async def submit(self, new: NewGeneration) -> tuple[Generation, int]:
        """Insert the row, then take a ticket and a position and enqueue the job (one atomic
        script). Returns the row, with its ticket, and its position.

        The ticket reaches the row with the message reference (:meth:`attach_message`), in the
        same statement: one INSERT and one UPDATE per ``/imagine``. Until then the arq job holds
        it (its score). If Redis cannot be reached, the row is failed (so nothing stays
        half-submitted) and the error propagates.
        """
        gen = await self.store.create(new)
        try:
            ticket, position = await self.queue.submit(gen.id)
        except Exception:
            await self.store.transition(gen.id, State.FAILED, error_code=ErrorCode.INTERNAL.value)
            raise
        return replace(gen, ticket=ticket), position

    async def attach_message(
        self,
        generation_id: int,
        ref: MessageRef,
        view: StatusView,
        *,
        ticket: int | None = None,
        position: int | None = None,
    ) -> None:
        """Store where the status message lives and what it shows (and, right after
        :meth:`submit`, the ticket and the position at submit), then nudge the renderer: the job
        may have moved on while the message was being posted."""
        meta: dict[str, object] = {}
        if PARTIAL in ref.extra:  # posted without everything: the renderer will finish it
            ref = replace(ref, extra={k: v for k, v in ref.extra.items() if k != PARTIAL})
        else:
            meta["rendered"] = view_hash(view)
        if position is not None:
            meta["position_at_submit"] = position
        await self.store.update(generation_id, message=ref.to_json(), meta=meta, ticket=ticket)
        await self.queue.publish(generation_id, "attached")

    async def view(self, gen: Generation, position: int | None = None) -> StatusView:
        if gen.state is State.QUEUED and position is None:
            position = await self.queue.position(gen.id)
        eta = None
        if position is not None:
            mean, capacity = await self.queue.eta_basis(gen.backend)
            eta = eta_seconds(position, mean, capacity) if capacity else None
        down = gen.state is State.QUEUED and await self.queue.backend_down(gen.backend) is not None
        return build_view(gen, position, eta, backend_down=down)

    async def describe_queue(self, actor: Actor) -> str:
        gens = await self.store.list_for_user(
            actor.platform, actor.workspace, actor.user_id, [State.QUEUED, State.RUNNING]
        )
        if not gens:
            return "You have no jobs in the queue. Start one with /imagine."
        lines = ["Your jobs:"]
        for gen in gens:
            view = await self.view(gen)
            prompt = gen.prompt if len(gen.prompt) <= 60 else gen.prompt[:59] + "…"
            lines.append(f"• job {gen.id}: {view.headline} · {prompt}")
        return "\n".join(lines)

    async def _visible(self, actor: Actor, generation_id: int) -> Generation:
        gen = await self.store.get(generation_id)
        if gen is None or gen.platform != actor.platform or gen.workspace != actor.workspace:
            raise GenbotError(ErrorCode.NOT_FOUND)
        return gen

    async def cancel(self, actor: Actor, generation_id: int | None) -> Generation:
        """Cancel a queued or running job of ``actor`` (any job, for an admin).

        A queued job leaves the queue at once (the jobs behind it move up); a running job is
        aborted on its worker. Raises :class:`GenbotError` when there is nothing to cancel.
        """
        if generation_id is None:
            mine = await self.store.list_for_user(
                actor.platform, actor.workspace, actor.user_id, [State.QUEUED, State.RUNNING]
            )
            if not mine:
                raise GenbotError(ErrorCode.NOT_FOUND, "You have no queued or running job.")
            generation_id = mine[-1].id
        gen = await self._visible(actor, generation_id)
        by_admin = gen.user_id != actor.user_id
        if by_admin and not actor.is_admin:
            raise GenbotError(ErrorCode.NOT_ALLOWED)
        if gen.state.terminal:
            raise GenbotError(
                ErrorCode.NOT_FOUND,
                f"Job {gen.id} has already finished; there is nothing to cancel.",
            )
        code = ErrorCode.CANCELLED_BY_ADMIN if by_admin else ErrorCode.CANCELLED
        done = await self._cancel_row(gen, code)
        if done is None:  # finished in the meantime
            raise GenbotError(
                ErrorCode.NOT_FOUND, f"Job {gen.id} has already finished; there is nothing to cancel."
            )
        return done

    async def _cancel_row(self, gen: Generation, code: ErrorCode) -> Generation | None:
        """Cancel the row (guarded), then take its job out of the queue, or stop it if it has
        started. Returns None when the row had already finished."""
        done = await self.store.transition(gen.id, State.CANCELLED, error_code=code.value)
        if done is None:
            return None
        if await self.queue.remove_waiting(gen.id):
            await self.queue.publish(gen.id, "dequeued")
        else:
            # It has started (or is starting): the worker aborts it, and its next progress
            # report finds the row cancelled and stops the backend.
            await self.queue.abort_running(gen.id)
        await self.queue.publish(gen.id, "finished")
        return done

    async def reconcile(self) -> int:
        """Heal, from the rows, what Redis forgot or what died. The bot runs it at start-up and
        the worker's sweep every ``worker.sweep_every_min`` minutes; safe to run at any time and
        from several processes. It reads no finished row: queued rows and stuck running rows are
        ranges of the ``(state, heartbeat_at)`` index, and the secrets are scrubbed by statements
        that use that index and ``(platform, finished_at)``.

        - A ``queued`` row whose arq job or waiting entry Redis lost is submitted again at its own
          ticket: its job and its place come back, in ticket order (skipped while a worker holds
          the job: it is starting, or waiting for the circuit breaker).
        - A ``running`` row whose heartbeat is older than ``worker.stuck_after_s`` and that no
          worker holds (its worker died and arq gave up, or Redis lost it) is stuck: it goes back
          to the queue at its ticket as a retry, ``worker.stuck_retries`` times, then fails as
          ``stuck``.
        - Expired interaction tokens and response URLs are removed from the message references.

        Every change of a row is published, so its message is re-rendered. Returns how many rows
        it healed (the scrubbed secrets do not count: they change no message).
        """
        healed = 0
        now = datetime.now(UTC)
        stuck_before = now - timedelta(seconds=self.settings.worker.stuck_after_s)
        queued = await self.store.list_queued()
        held = await self.queue.job_states([gen.id for gen in queued])
        for gen, state in zip(queued, held, strict=True):
            if state == "running":
                continue
            ticket, _position, restored = await self.queue.restore(gen.id, gen.ticket)
            if restored:
                healed += await self._restored(gen, ticket)
        for gen in await self.store.list_stuck(stuck_before):
            if await self.queue.job_state(gen.id) == "running":
                continue
            if gen.attempts >= self.settings.worker.stuck_retries:
                if await self.store.transition(gen.id, State.FAILED, error_code=ErrorCode.STUCK.value):
                    await self.queue.remove_waiting(gen.id)
                    await self.queue.publish(gen.id, "finished")
                    healed += 1
                continue
            ticket, _position, _ = await self.queue.restore(gen.id, gen.ticket)
            if await self.store.transition(gen.id, State.QUEUED, retry=True) is None:
                await self.queue.remove_waiting(gen.id)  # it finished meanwhile
                continue
            healed += await self._restored(gen, ticket)
        # A secret outlives its row's end by at most its lifetime; two sweeps of slack.
        look_back = timedelta(seconds=SECRET_LIFETIME_S + 2 * 60 * self.settings.worker.sweep_every_min)
        scrubbed = await self.store.scrub_expired_secrets(
            now, platforms=[p.value for p in Platform], finished_since=now - look_back
        )
        if healed or scrubbed:
            log.info("reconcile: healed %d generations, scrubbed %d expired secrets", healed, scrubbed)
        return healed

    async def _restored(self, gen: Generation, ticket: int) -> int:
        if ticket != gen.ticket:
            await self.store.update(gen.id, ticket=ticket)
        await self.queue.publish(gen.id, "dequeued")
        return 1

    async def repost(self, actor: Actor, generation_id: int, responder: Responder) -> None:
        """Post a job's status message again (its author or an admin); the new message is the one
        kept up to date. Limited to them so that nobody can move a job's prompt and image out of
        the channel it was made in."""
        gen = await self._visible(actor, generation_id)
        if gen.user_id != actor.user_id and not actor.is_admin:
            raise GenbotError(ErrorCode.NOT_ALLOWED)
        view = await self.view(gen)
        ref = await responder.post_status(view)
        await self.attach_message(gen.id, ref, view)
