"""The core: what a command does, independent of the platform it came from.

An adapter acks the platform, translates the payload into a :class:`CommandRequest` and calls
:meth:`Genbot.handle` with a :class:`Responder`. Everything a member sees in reply goes through the
responder; failures become catalogue words, never exception text.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from bot import tracing
from bot.admin import Admin
from bot.api import Call, Command, JobKind, JobRequest
from bot.attachments import ATTACHMENT_TYPES, Attachment, keep
from bot.commands import (
    JOB_MAX,
    CommandSpec,
    OptionSpec,
    check_known,
    cleaned,
    parse_int,
    parse_options,
)
from bot.config import Platform, Settings
from bot.errors import ErrorCode, ErrorText, GenbotError, describe
from bot.logs import at_work
from bot.metrics import PLATFORM_RATE_LIMITED, PLATFORM_WRITES, SWEEP_ACTIONS
from bot.models import (
    SECRET_LIFETIME_S,
    Actor,
    Ban,
    CommandRequest,
    Generation,
    MessageRef,
    NewGeneration,
    Quota,
    State,
    StatusView,
)
from bot.moderation import TermMatcher, format_span
from bot.plugins import LoadedPlugin, Plugins, all_specs
from bot.ports import (
    HANDED_OVER,
    PARTIAL,
    BlobStore,
    Budgets,
    CommandInbox,
    GenerationStore,
    InboxEntry,
    JobQueue,
    MessageUnreachable,
    ModerationStore,
    QueueUnavailable,
    QuotaRefused,
    RateLimited,
    Responder,
    Spend,
    TicketsLost,
    Upload,
)
from bot.renderer import ADOPT_CLAIM_S
from bot.text import REPLY_MAX, clean_block, clean_line, clip, shown, storable
from bot.views import build_view, format_duration, view_hash, wait_seconds

log = logging.getLogger(__name__)

#: The most a job's options may take, encoded: they are read with the row, by every renderer.
OPTIONS_MAX_BYTES = 32 * 1024
#: How long a job kind's verb ("Generating") and details line may be in its status message.
VERB_MAX = 40
DETAILS_MAX = 300
#: How long an adapter may take to download a file a member attached (see :mod:`bot.attachments`).
FETCH_TIMEOUT_S = 20.0


T = TypeVar("T")

#: The identity automatic moderation acts as in the audit log and on bans.
SYSTEM = "genbot"
#: A queued row this young without a ticket may still be in :meth:`Genbot.submit`: the sweep
#: leaves it alone (its submission may yet be refused and the row discarded).
SUBMIT_GRACE = timedelta(seconds=30)
#: How long a process keeps a workspace's blocked terms and limits before reading them again.
TERMS_TTL_S = 5.0
#: The lock one process holds while it seeds the ticket counter again (see Genbot.seed_tickets).
SEED_LOCK = "ticket-seed"
SEED_LOCK_TTL_S = 30.0
#: How long another process waits for that seed before it gives up on the request.
SEED_WAIT_S = 10.0
#: Records of acknowledged commands are run again at most this many per round, and dropped once
#: this old (a Slack response_url lives 30 minutes, a Discord interaction token 15).
REVIVE_BATCH = 100
INBOX_KEEP = timedelta(minutes=30)
#: A claim to run a record again, older than this, is taken over (its bot died too).
INBOX_CLAIM = timedelta(minutes=5)

#: Tickets given after Redis lost its counter start at the next multiple of this above every
#: ticket the database holds (see Genbot.seed_tickets). Tickets are arq scores, and arq starts
#: only jobs whose score is below the current time in ms (about 1.8e12): room for over a
#: thousand such losses, of a billion tickets each.
TICKET_EPOCH = 1_000_000_000


def _cancelling() -> bool:
    """Whether the current task is being cancelled (its process is stopping)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class Recent(Generic[T]):
    """Per-workspace values read from the database at most every ``ttl_s`` seconds. This
    process forgets one at once when its admins change it; other processes within the TTL.

    One load per key at a time, however many callers want it (single flight): those that come
    while it runs wait for it, so a stale value brings one query, not one per request. A caller
    cancelled meanwhile leaves the load to the others; a failed load is not kept. A value read
    before a :meth:`forget` of its key is handed to its callers but not kept."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._values: dict[tuple[str, str], tuple[float, T]] = {}
        self._loading: dict[tuple[str, str], asyncio.Task[T]] = {}
        self._forgotten: dict[tuple[str, str], int] = {}

    async def get(self, key: tuple[str, str], load: Callable[[], Awaitable[T]]) -> T:
        cached = self._values.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        task = self._loading.get(key)
        if task is None:
            task = asyncio.ensure_future(self._load(key, load, self._forgotten.get(key, 0)))
            self._loading[key] = task

            def loaded(done: asyncio.Task[T]) -> None:
                if self._loading.get(key) is done:  # not a newer load, after a forget
                    del self._loading[key]

            task.add_done_callback(loaded)
        return await asyncio.shield(task)

    async def _load(self, key: tuple[str, str], load: Callable[[], Awaitable[T]], era: int) -> T:
        value = await load()
        if self._forgotten.get(key, 0) == era:
            self._values[key] = (time.monotonic() + self.ttl_s, value)
        return value

    def forget(self, key: tuple[str, str]) -> None:
        self._values.pop(key, None)
        self._forgotten[key] = self._forgotten.get(key, 0) + 1
        self._loading.pop(key, None)  # the next caller loads afresh


#: The longest "what happened" and "what to do" sentences of an error reply: with the title, the
#: whole reply stays within :data:`~bot.text.REPLY_MAX`.
ERROR_PART_MAX = 800


class BoundedResponder:
    """A responder whose replies never exceed :data:`~bot.text.REPLY_MAX` characters (a long
    listing is cut at a line, with "…"). The core answers every command and button through one."""

    def __init__(self, inner: Responder) -> None:
        self.inner = inner

    async def reply(self, text: str) -> None:
        await self.inner.reply(clip(text, REPLY_MAX))

    async def say(self, text: str) -> None:
        await self.inner.say(clip(text, REPLY_MAX))

    async def fetch(self, ref: str, max_bytes: int) -> Upload:
        return await self.inner.fetch(ref, max_bytes)

    async def reply_error(self, error: ErrorText) -> None:
        await self.inner.reply_error(
            replace(error, what=clip(error.what, ERROR_PART_MAX), todo=clip(error.todo, ERROR_PART_MAX))
        )

    async def post_status(self, view: StatusView) -> MessageRef:
        return await self.inner.post_status(view)

    def spends(self, view: StatusView) -> list[Spend]:
        return self.inner.spends(view)


class Genbot:
    def __init__(
        self,
        settings: Settings,
        store: GenerationStore,
        queue: JobQueue,
        moderation: ModerationStore,
        inbox: CommandInbox,
        plugins: Plugins,
        blobs: BlobStore,
    ) -> None:
        self.settings = settings
        #: Where files members attach are kept for their jobs (:mod:`bot.attachments`).
        self.blobs = blobs
        self.store = store
        self.queue = queue
        self.moderation = moderation
        self.inbox = inbox
        self.plugins = plugins
        #: Every command, as the platforms register them (:func:`~bot.plugins.all_specs`).
        self.specs: dict[str, CommandSpec] = {s.key: s for s in all_specs(plugins)}
        self.admin = Admin(self)
        #: Receipts of commands being run again after their bot died (see revive_commands).
        self._reviving: set[str] = set()
        self._terms: Recent[TermMatcher] = Recent(TERMS_TTL_S)
        self._limits: Recent[dict[str, int]] = Recent(TERMS_TTL_S)
        self._backends: Recent[str | None] = Recent(TERMS_TTL_S)
        #: The platform's write budgets, shared with its renderers (``bot.app`` sets them): a
        #: command posts its status message itself only within them.
        self.budgets: Budgets | None = None

    # -- entry points -------------------------------------------------------------------------

    async def receive(self, platform: str, payload: dict[str, Any]) -> str:
        """Record a command its adapter is about to acknowledge (see :class:`CommandHandler`)."""
        receipt = uuid.uuid4().hex
        await self.inbox.put(receipt, platform, storable(payload))
        return receipt

    async def _finished(self, receipt: str | None) -> None:
        """The command of ``receipt`` is done (answered, or its job posted): forget its record.
        A command cut short (its task cancelled as its process stops) keeps it, to run again."""
        if receipt is None:
            return
        try:
            await self.inbox.done(receipt)
        except Exception:  # it runs again later: harmless, as every command is safe to run again
            log.warning("could not forget the record of a finished command", exc_info=True)

    async def handle(
        self, request: CommandRequest, responder: Responder, *, receipt: str | None = None
    ) -> None:
        """Run one command. Never raises for the member's sake: every outcome is a reply, of at
        most :data:`~bot.text.REPLY_MAX` characters. Option values and the member's name are
        read cleaned (:func:`~bot.commands.cleaned`), whichever adapter sent them.

        ``receipt`` (from :meth:`receive`): the command's record, forgotten once it is done. It
        also keys the request's row, so a command run again after its bot died makes no second
        job (see :meth:`_start`)."""
        responder = BoundedResponder(responder)
        try:
            with tracing.command_span(shown(request.name), request.actor.platform):
                await self._handle(request, responder, receipt)
        finally:
            if not _cancelling():
                await self._finished(receipt)

    async def _handle(
        self, request: CommandRequest, responder: BoundedResponder, receipt: str | None
    ) -> None:
        at_work(platform=request.actor.platform)  # on the records of this command's task
        try:
            request = cleaned(request)
            spec = self.specs.get(request.name)
            if spec is None:
                raise GenbotError(ErrorCode.INVALID_OPTION, f"There is no command /{shown(request.name)}.")
            if (found := self.plugins.command(spec.key)) is not None:
                await self._plugin_command(*found, spec, request, responder, receipt=receipt)
            elif spec.admin:
                await responder.reply(await self.admin.run(spec, request))
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
            tracing.annotate({tracing.COMMAND_OUTCOME: exc.code.value})
            await responder.reply_error(exc.text)
        except Exception:
            log.exception("command /%s failed", shown(request.name))
            tracing.failed(tracing.COMMAND_OUTCOME, ErrorCode.INTERNAL.value)
            await responder.reply_error(describe(ErrorCode.INTERNAL))
        else:
            tracing.annotate({tracing.COMMAND_OUTCOME: "ok"})

    async def handle_action(
        self,
        actor: Actor,
        generation_id: int,
        action: str,
        responder: Responder,
        *,
        receipt: str | None = None,
    ) -> None:
        """A button on a status message: ``cancel`` the job, or ``reroll`` it (the same prompt and
        options with a new seed, as a new job of the member who pressed it). Both are for the
        job's author or an admin. A job number beyond any row (see :data:`JOB_MAX`) is not found.
        ``receipt``: as for :meth:`handle`."""
        responder = BoundedResponder(responder)
        try:
            with tracing.command_span(f"button:{shown(str(action))}", actor.platform):
                await self._handle_action(actor, generation_id, action, responder, receipt)
        finally:
            if not _cancelling():
                await self._finished(receipt)

    async def _handle_action(
        self, actor: Actor, generation_id: int, action: str, responder: BoundedResponder, receipt: str | None
    ) -> None:
        try:
            if not 1 <= generation_id <= JOB_MAX:
                raise GenbotError(ErrorCode.NOT_FOUND)
            if action == "cancel":
                gen = await self.cancel(actor, generation_id)
                await responder.reply(f"Cancelled job {gen.id}.")
            elif action == "reroll":
                await self.reroll(actor, generation_id, responder, receipt=receipt)
            else:
                raise GenbotError(ErrorCode.INVALID_OPTION, "That button does nothing any more.")
        except GenbotError as exc:
            tracing.annotate({tracing.COMMAND_OUTCOME: exc.code.value})
            await responder.reply_error(exc.text)
        except Exception:
            log.exception("action %s on %s failed", shown(str(action)), generation_id)
            tracing.failed(tracing.COMMAND_OUTCOME, ErrorCode.INTERNAL.value)
            await responder.reply_error(describe(ErrorCode.INTERNAL))
        else:
            tracing.annotate({tracing.COMMAND_OUTCOME: "ok"})

    # -- commands -----------------------------------------------------------------------------

    async def _plugin_command(
        self,
        command: Command,
        loaded: LoadedPlugin,
        spec: CommandSpec,
        request: CommandRequest,
        responder: Responder,
        *,
        receipt: str | None = None,
    ) -> None:
        """Run a plugin's command: an answer (``run``), or a job of its kind, queued like any
        other. Its options are parsed by their types first; a plugin's :class:`~bot.api.Invalid`
        reaches the member as its one sentence, anything else it raises as an internal error."""
        actor = request.actor
        if command.admin and not actor.is_admin:
            raise GenbotError(
                ErrorCode.NOT_ALLOWED,
                f"Only admins can use /{spec.key}; you are not an admin here.",
                todo="Ask one of this server's admins if something needs doing.",
            )
        options = parse_options(spec, request.options, text_max=self.settings.limits.prompt_max)
        files = [o for o in spec.options if o.type in ATTACHMENT_TYPES and o.name in options]
        if files:
            await self._may(actor, _texts(spec, options))  # before any download
            for option in files:
                options[option.name] = await self._attachment(option, options[option.name], responder)
        found = self.plugins.kind(command.job) if command.job is not None else None
        backend = await self.backend_for(actor, found[0]) if found is not None else ""
        call = Call(actor, request.channel, options, loaded.settings, backend)
        if command.run is not None:
            await self._answer(command, spec, call, responder)
            return
        kind, job, texts = self.prepare(command, spec, call)
        await self._start(actor, request.channel, kind, job, texts, responder, receipt=receipt)

    async def _answer(self, command: Command, spec: CommandSpec, call: Call, responder: Responder) -> None:
        """A plugin command that queues nothing: a banned member, or text options with a blocked
        term, are refused as a job would be; then its ``run`` answers, within half of
        ``renderer.adopt_after_s`` (past that a bot would run the command again, taking it for
        one whose bot died). An admin command's use goes to the audit log."""
        actor = call.actor
        await self._may(actor, _texts(spec, dict(call.options)))
        assert command.run is not None
        async with asyncio.timeout(self.settings.renderer.adopt_after_s / 2):
            answer = await command.run(call)
        if not isinstance(answer, str) or not (answer := clean_block(answer)):
            raise TypeError(f"/{spec.key} answered {type(answer).__name__} {answer!r}, not a text")
        if command.admin:
            await self.moderation.audit(actor, spec.key, target=None, reason=None, details=dict(call.options))
        await (responder.say(answer) if command.public else responder.reply(answer))

    async def _may(self, actor: Actor, texts: list[str]) -> None:
        """Refuse a banned member, or ``texts`` with a blocked term (:meth:`check_member`), before
        work that a job's submit would refuse only later: an answer, a download."""
        if (ban := await self.moderation.get_ban(actor.platform, actor.workspace, actor.user_id)) is not None:
            raise self._refusal(QuotaRefused("banned", until=ban.expires_at), self.quota_for(actor))
        await self.check_member(actor, texts)

    async def _attachment(self, option: OptionSpec, ref: str, responder: Responder) -> Attachment:
        """The file ``ref`` names (an attachment option's value), fetched by the command's
        adapter within :data:`FETCH_TIMEOUT_S`, checked and kept in the blob store."""
        limits = self.settings.limits
        try:
            async with asyncio.timeout(FETCH_TIMEOUT_S):
                upload = await responder.fetch(ref, limits.attachment_max_bytes)
        except TimeoutError:
            raise GenbotError(
                ErrorCode.INVALID_OPTION, f"The {option.name} took too long to download. Try again."
            ) from None
        return await keep(
            upload,
            image=option.type == "image",
            max_bytes=limits.attachment_max_bytes,
            pixels_max=limits.image_pixels_max,
            blobs=self.blobs,
        )

    def prepare(
        self, command: Command, spec: CommandSpec, call: Call
    ) -> tuple[JobKind, JobRequest, list[str]]:
        """A job command's parsed ``call`` as its job kind, the job to queue and the texts that
        blocked terms are checked on (every text option). Raises :class:`GenbotError` for what
        the plugin refuses. Pure: nothing is written."""
        assert command.job is not None  # checked as the plugin loaded
        found = self.plugins.kind(command.job)
        assert found is not None
        options = dict(call.options)
        job = command.prepare(call) if command.prepare is not None else _default_request(spec, options)
        if job.backend is None:
            job = replace(job, backend=call.backend or None)
        return found[0], job, _texts(spec, options)

    def new_job(
        self, actor: Actor, channel: str, kind: JobKind, job: JobRequest, request_key: str
    ) -> NewGeneration:
        """The row of ``job``, of ``kind``, as :meth:`submit` takes it: its text one clean line
        of at most ``limits.prompt_max`` characters, its options clean JSON of at most
        :data:`OPTIONS_MAX_BYTES`, its verb and details short clean lines, its backend one of the
        kind's. Raises :class:`ValueError` for options a plugin made that cannot be stored, and
        :class:`GenbotError` for a backend the kind does not have (nothing is written)."""
        options = storable({k: _json(v) for k, v in job.options.items()})
        try:
            size = len(json.dumps(options, allow_nan=False).encode())
        except (TypeError, ValueError) as exc:
            raise ValueError(f"job kind {kind.name}: its options are not JSON ({exc})") from None
        if size > OPTIONS_MAX_BYTES:
            raise ValueError(f"job kind {kind.name}: its options take {size} bytes, over {OPTIONS_MAX_BYTES}")
        backend = job.backend or kind.backend_name
        if backend not in kind.lines:
            raise GenbotError(
                ErrorCode.INVALID_OPTION,
                f"There is no such backend for this; choose one of {', '.join(kind.lines)}.",
            )
        look = {
            "verb": clean_line(kind.verb)[:VERB_MAX] or "Working",
            "details": clean_line(kind.details(options))[:DETAILS_MAX],
            "reroll": kind.rerolls,
        }
        return NewGeneration(
            actor=actor,
            channel=channel,
            kind=kind.name,
            text=clean_line(job.text)[: self.settings.limits.prompt_max],
            options=options,
            backend=backend,
            look=look,
            request_key=request_key,
        )

    async def reroll(
        self, actor: Actor, generation_id: int, responder: Responder, *, receipt: str | None = None
    ) -> None:
        """A new job of the kind and text of ``generation_id``, with the options its kind gives a
        reroll (for an image: a new seed)."""
        gen = await self._visible(actor, generation_id)
        if gen.user_id != actor.user_id and not actor.is_admin:
            raise GenbotError(ErrorCode.NOT_ALLOWED)
        found = self.plugins.kind(gen.kind)
        options = found[0].reroll(gen.options) if found is not None else None
        if found is None or options is None:
            raise GenbotError(ErrorCode.INVALID_OPTION, "That button does nothing any more.")
        texts = [gen.prompt, *(v for v in options.values() if isinstance(v, str))]
        # The same backend, while it is one of the kind's; else the one the workspace runs on now.
        same = gen.backend if gen.backend in found[0].lines else await self.backend_for(actor, found[0])
        if "backend" in options:  # the image plugin's details say where it runs
            options = {**options, "backend": same}
        job = JobRequest(gen.prompt, options, backend=same)
        await self._start(actor, gen.channel, found[0], job, texts, responder, receipt=receipt)

    async def _start(
        self,
        actor: Actor,
        channel: str,
        kind: JobKind,
        job: JobRequest,
        texts: list[str],
        responder: Responder,
        *,
        receipt: str | None = None,
    ) -> None:
        """Check the member may (ban, blocked terms in ``texts``, pause, quotas), submit a new
        job and post its status message. A refusal raises :class:`GenbotError` having changed
        nothing.

        Safe to run again for the same ``receipt`` (a command whose bot died, run again by
        :meth:`revive_commands`): the row is keyed by it, so the run finds the row the first
        made and goes on from where that stopped; it posts the status message only if the first
        did not, and only if no renderer has taken that over meanwhile."""
        await self.check_member(actor, texts)
        new = self.new_job(actor, channel, kind, job, receipt or uuid.uuid4().hex)
        gen, position = await self.submit(new, quota=await self.member_quota(actor))
        at_work(job=gen.id)
        tracing.annotate({tracing.JOB_ID: gen.id})
        if gen.message.get("message_id"):
            return  # an earlier run of this command posted it
        if receipt in self._reviving:
            stale = datetime.now(UTC).timestamp() - ADOPT_CLAIM_S
            if not await self.store.claim_unposted(gen.id, stale_before=stale):
                return  # a renderer posts it (or has)
        view = await self.view(gen, position)
        # A live command gives its post up by half of adopt_after_s after the row was made: past
        # all of it, a renderer (or a bot running the command again) takes the request for one
        # whose bot died, and posts its message itself. (A receipt's record is older than its
        # row.) A command run again holds the claim to post, and has half of it afresh.
        budget = self.settings.renderer.adopt_after_s / 2
        if receipt not in self._reviving:
            budget -= (datetime.now(UTC) - gen.created_at).total_seconds()
        try:
            async with asyncio.timeout(max(budget, 0)):
                ref = await self._post_first(responder, view, actor.platform)
        except MessageUnreachable:
            # No message, no job: nobody could follow it, and the member reads why.
            await self.cancel_row(gen, ErrorCode.CANCELLED)
            await self.store.update_meta(gen.id, {"unreachable": True})  # never to be posted
            raise
        except (Exception, asyncio.CancelledError) as exc:
            # The platform's budget is spent (a 429), it failed, or this bot is stopping: the row
            # is queued already, and the member was told its message is coming. A renderer posts
            # it, first of all its writes (the sweep too, if every bot died meanwhile).
            if not isinstance(exc, RateLimited | TimeoutError | asyncio.CancelledError):
                log.warning(
                    "posting the status message of %s failed; a renderer posts it", gen.id, exc_info=True
                )
            await self._hand_over(gen.id)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        if ref is None:
            await self._hand_over(gen.id)
            return
        await self.attach_message(gen.id, ref, view, ticket=gen.ticket, position=position)

    async def _post_first(self, responder: Responder, view: StatusView, platform: str) -> MessageRef | None:
        """Post a status message if the platform's budget allows it now (None if not); a 429
        holds its scope for every process."""
        spends = responder.spends(view)
        if self.budgets is not None and spends and await self.budgets.take(spends) > 0:
            return None
        try:
            posted = await responder.post_status(view)
        except RateLimited as limited:
            PLATFORM_RATE_LIMITED.labels(platform).inc()
            if self.budgets is not None:
                await self.budgets.hold(limited.scope, limited.retry_after)
            raise
        PLATFORM_WRITES.labels(platform, "post").inc()
        return posted

    async def _hand_over(self, generation_id: int) -> None:
        """Leave the first post of ``generation_id`` to the renderers (see :data:`HANDED_OVER`)."""
        with contextlib.suppress(Exception):
            await asyncio.shield(self._mark_handed_over(generation_id))

    async def _mark_handed_over(self, generation_id: int) -> None:
        # Its claim to post (a command run again holds one) goes with it: a renderer claims it now.
        await self.store.update_meta(generation_id, {HANDED_OVER: True, "adopting": None})
        await self.queue.publish(generation_id, "unposted")

    async def revive_commands(
        self,
        platform: str,
        revive: Callable[[InboxEntry], Awaitable[None]],
        *,
        stop: asyncio.Event | None = None,
    ) -> int:
        """Run again the commands of ``platform`` whose bot acknowledged them and died before they
        were done: their records are older than ``renderer.adopt_after_s`` (a live command is done
        well before: it gives up its post after half of that). ``revive(entry)`` is the adapter's:
        it rebuilds the command and its answers from the record and hands them to :meth:`handle`
        with the record's receipt. One bot of many claims each record. Records older than
        :data:`INBOX_KEEP`, whose reply handles are long dead, are dropped. It takes up no more
        once ``stop`` is set (its bot is stopping). Returns how many commands it ran again."""
        now = datetime.now(UTC)
        dropped = await self.inbox.expire(now - INBOX_KEEP)
        if dropped:
            log.warning(
                "dropped %d commands acknowledged over %s ago and never finished", dropped, INBOX_KEEP
            )
        revived = 0
        for entry in await self.inbox.stale(
            platform, now - timedelta(seconds=self.settings.renderer.adopt_after_s), REVIVE_BATCH
        ):
            if stop is not None and stop.is_set():
                break
            if not await self.inbox.claim(entry.key, now, now - INBOX_CLAIM):
                continue
            log.warning("running again a command acknowledged at %s by a bot that stopped", entry.created_at)
            self._reviving.add(entry.key)
            try:
                await revive(entry)
                revived += 1
            except Exception:
                log.exception("running again an acknowledged command failed")
            finally:
                self._reviving.discard(entry.key)
        return revived

    def quota_for(self, actor: Actor, own: Mapping[str, int] | None = None) -> Quota:
        """The limits of ``actor``'s next request: the deployment's, with what their workspace
        set for itself (``own``: see :data:`WORKSPACE_LIMITS`) in their place."""
        limits = self.settings.quota
        own = own or {}
        return Quota(
            member=actor.member,
            workspace=(actor.platform, actor.workspace),
            max_queued=own.get("max_queued", limits.max_queued),
            rate_count=own.get("rate_count", limits.rate_count),
            rate_window_s=own.get("rate_window_s", limits.rate_window_s),
            global_max=limits.global_max,
            exempt=actor.is_admin and limits.admins_exempt,
            max_running=limits.max_running,
        )

    async def member_quota(self, actor: Actor) -> Quota:
        return self.quota_for(actor, await self.workspace_limits(actor.platform, actor.workspace))

    async def workspace_limits(self, platform: str, workspace: str) -> dict[str, int]:
        """The limits the workspace set for itself, cached like the blocked terms."""
        return await self._limits.get(
            (platform, workspace), lambda: self.moderation.get_limits(platform, workspace)
        )

    def forget_limits(self, platform: str, workspace: str) -> None:
        self._limits.forget((platform, workspace))

    async def backend_for(self, actor: Actor, kind: JobKind) -> str:
        """The backend a new job of ``kind`` in ``actor``'s workspace runs on: the one its admins
        chose (``/admin backend``) when the kind has it, else the kind's default."""
        chosen = await self._backends.get(
            (actor.platform, actor.workspace),
            lambda: self.moderation.get_backend(actor.platform, actor.workspace),
        )
        return chosen if chosen in kind.lines else kind.backend_name

    def forget_backend(self, platform: str, workspace: str) -> None:
        self._backends.forget((platform, workspace))

    async def check_member(self, actor: Actor, texts: list[str]) -> None:
        """Refuse a request whose ``texts`` (its text options) hold a blocked term, counting it:
        ``strikes`` of them within the window give the member a temporary ban. (Bans themselves
        are checked by the submit script; a banned member's blocked prompt reads "banned" and
        counts nothing.)"""
        terms = await self.blocked_terms(actor.platform, actor.workspace)
        if not terms.terms or all(terms.first(text) is None for text in texts):
            return
        if (ban := await self.moderation.get_ban(actor.platform, actor.workspace, actor.user_id)) is not None:
            # Banned anyway: say so, and count no strike (a timeout must never replace a ban).
            raise self._refusal(QuotaRefused("banned", until=ban.expires_at), self.quota_for(actor))
        rules = self.settings.moderation
        await self.queue.count_refusal(actor.platform, actor.workspace, ErrorCode.CONTENT_BLOCKED.value)
        strikes = await self.queue.strike(actor.member, rules.strike_window_min * 60)
        detail = "Your prompt contains a term this server does not allow."
        if strikes >= rules.strikes:
            now = datetime.now(UTC)
            timeout = timedelta(minutes=rules.timeout_min)
            reason = f"{strikes} blocked prompts within {rules.strike_window_min} min"
            await self.ban(
                Ban(actor.platform, actor.workspace, actor.user_id, reason, SYSTEM, now, now + timeout)
            )
            system = Actor(actor.platform, actor.workspace, SYSTEM, SYSTEM, is_admin=True)
            await self.moderation.audit(
                system, "timeout", target=actor.user_id, reason=reason, details={"minutes": rules.timeout_min}
            )
            detail += f" After {strikes} such prompts, you can't make images for {format_span(timeout)}."
        elif strikes == rules.strikes - 1:
            detail += " One more and you will be paused for a while."
        raise GenbotError(ErrorCode.CONTENT_BLOCKED, detail)

    async def blocked_terms(self, platform: str, workspace: str) -> TermMatcher:
        """The workspace's blocked terms, compiled and cached (see :class:`Recent`)."""

        async def load() -> TermMatcher:
            return TermMatcher(await self.moderation.list_terms(platform, workspace))

        return await self._terms.get((platform, workspace), load)

    def forget_terms(self, platform: str, workspace: str) -> None:
        self._terms.forget((platform, workspace))

    async def ban(self, ban: Ban) -> None:
        """Store a ban (the truth) and mirror it in Redis, where every submission checks it."""
        await self.moderation.put_ban(ban)
        await self.queue.ban(ban.member, ban.expires_at)

    async def unban(self, platform: str, workspace: str, user_id: str) -> bool:
        removed = await self.moderation.delete_ban(platform, workspace, user_id)
        await self.queue.unban(f"{platform}:{workspace}:{user_id}")
        return removed

    async def submit(
        self, new: NewGeneration, *, quota: Quota | None = None
    ) -> tuple[Generation, int | None]:
        """Insert the row, then take a ticket and a position and enqueue the job (one atomic
        script). Returns the row, with its ticket, and its position (0: held aside, because the
        member already runs ``quota.max_running`` jobs; it joins the line when one of theirs ends).

        The ticket reaches the row with the message reference (:meth:`attach_message`), in the
        same statement: one INSERT and one UPDATE per ``/imagine``. Until then the arq job holds
        it (its score). With ``quota``, a refusal (paused, queue full, rate limited) discards the
        row and raises :class:`GenbotError`: nothing is left behind. So does a Redis that cannot
        be reached (``queue_unavailable``: try again); if its script ran and only the answer was
        lost, the worker finds no row and drops the job. Any other failure fails the row.
        """
        gen = await self.store.create(new)
        if gen.ticket is not None or gen.state is not State.QUEUED or gen.message:
            # The same request made this row before (its command is being run again) and got
            # further than the queue: nothing to enqueue. The caller reads where it stands.
            return gen, None
        try:
            ticket, position = await self._enqueue(gen.id, line=gen.backend, quota=quota)
        except QuotaRefused as refused:
            await self.store.discard(gen.id)
            error = self._refusal(refused, quota or self.quota_for(new.actor))
            await self.queue.count_refusal(new.actor.platform, new.actor.workspace, error.code.value)
            raise error from None
        except QueueUnavailable:
            await self.store.discard(gen.id)
            log.warning("request %s refused: the queue (Redis) is unreachable", gen.id)
            raise GenbotError(
                ErrorCode.QUEUE_UNAVAILABLE, todo="Try again in a minute: this request was not queued."
            ) from None
        except Exception:
            await self.store.transition(gen.id, State.FAILED, error_code=ErrorCode.INTERNAL.value)
            await self.store.update_meta(gen.id, {"unreachable": True})  # its member was answered
            raise
        return replace(gen, ticket=ticket), position

    async def _enqueue(
        self, generation_id: int, *, line: str, ticket: int | None = None, quota: Quota | None = None
    ) -> tuple[int, int]:
        """:meth:`JobQueue.submit`, seeding the tickets first if Redis lost them."""
        try:
            return await self.queue.submit(generation_id, line=line, ticket=ticket, quota=quota)
        except TicketsLost:
            await self.seed_tickets()
        try:
            return await self.queue.submit(generation_id, line=line, ticket=ticket, quota=quota)
        except TicketsLost:  # Redis restarted again meanwhile
            raise QueueUnavailable from None

    async def _restore(self, gen: Generation) -> tuple[int, int, bool]:
        """:meth:`JobQueue.restore` of ``gen`` at its ticket, in its line, seeding the tickets
        first if Redis lost them."""
        try:
            return await self.queue.restore(gen.id, gen.ticket, line=gen.backend)
        except TicketsLost:
            await self.seed_tickets()
        try:
            return await self.queue.restore(gen.id, gen.ticket, line=gen.backend)
        except TicketsLost:  # Redis restarted again meanwhile
            raise QueueUnavailable from None

    async def seed_tickets(self) -> int:
        """Start Redis's ticket counter again when it was not seeded in this life of the Redis
        server (Redis restarted, empty or from a snapshot whose counter may be behind, or lost the
        counter) or is behind a ticket the database holds, so that no ticket is given twice.

        The database holds every ticket given, except those of requests caught between their
        submit and the statement that stores their ticket (the status post lies between). So the
        counter does not start at the highest ticket the rows hold, but at the next **epoch**:
        the next multiple of :data:`TICKET_EPOCH`, above the highest ticket of the rows and above
        every epoch started before (the database counts them), so that every ticket given before
        is lower than every ticket given after, those caught in flight included, however many
        losses come in a row. (The very first seed of a deployment starts at 0.)

        Before the counter is back, the queued rows go back in line at their own tickets
        (:meth:`_heal_queued`), so a request that arrives meanwhile waits and then lines up
        behind them, rather than being told a place it would lose to them a moment later. One
        process seeds at a time (a lock in Redis); the others wait for the counter to appear, and
        give up with :class:`QueueUnavailable` after :data:`SEED_WAIT_S` (the seeding process
        died: its lock expires). Returns how many queued rows it put back in line."""
        token = await self.queue.lock(SEED_LOCK, SEED_LOCK_TTL_S)
        if token is None:
            deadline = time.monotonic() + SEED_WAIT_S
            while not (await self.queue.ticket_state())[1]:
                if time.monotonic() > deadline:
                    raise QueueUnavailable
                await asyncio.sleep(0.05)
            return 0
        try:
            high = await self.store.max_ticket()
            if await self._tickets_sound(high):
                return 0  # another process has just seeded it
            epoch = await self.store.next_ticket_epoch(high // TICKET_EPOCH + 1 if high else 0)
            healed = await self._heal_queued(datetime.now(UTC), new_tickets=False)
            await self.queue.seed_tickets(epoch * TICKET_EPOCH)
            if epoch:
                log.info(
                    "tickets start again after %d (Redis restarted or lost its counter)", epoch * TICKET_EPOCH
                )
        finally:
            await self.queue.unlock(SEED_LOCK, token)
        return healed

    async def _tickets_sound(self, high: int) -> bool:
        """Whether the counter was seeded in this life of Redis and is not behind ``high``."""
        counter, seeded = await self.queue.ticket_state()
        return seeded and counter is not None and counter >= high

    async def check_tickets(self) -> int:
        """Seed the ticket counter (:meth:`seed_tickets`) unless it was seeded in this life of
        the Redis server and is not behind a ticket the database holds. The database is read
        first: every ticket it holds was given before, so a counter read after it that is lower
        went back in time. Returns how many queued rows the seed put back in line."""
        if await self._tickets_sound(await self.store.max_ticket()):
            return 0
        return await self.seed_tickets()

    def _refusal(self, refused: QuotaRefused, limits: Quota) -> GenbotError:
        if refused.reason == "banned":
            until = f" until {refused.until:%Y-%m-%d %H:%M} UTC" if refused.until else ""
            return GenbotError(ErrorCode.BANNED, f"An admin has stopped you from making images here{until}.")
        if refused.reason == "paused":
            return GenbotError(ErrorCode.QUEUE_PAUSED)
        if refused.reason == "global":
            return GenbotError(
                ErrorCode.QUEUE_FULL, f"The queue is full: {limits.global_max} requests are waiting."
            )
        if refused.reason == "queued":
            return GenbotError(
                ErrorCode.QUEUE_FULL,
                f"You already have {limits.max_queued} requests waiting, the most one member may have.",
            )
        wait = format_duration(refused.retry_after_s or limits.rate_window_s)
        return GenbotError(
            ErrorCode.RATE_LIMITED,
            f"You have sent {limits.rate_count} requests in the last "
            f"{format_duration(limits.rate_window_s)}; you can send the next one in about {wait}.",
        )

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
        meta: dict[str, object] = {"adopting": None}  # a claim to post it (revive_commands) is done
        if PARTIAL in ref.extra:  # posted without everything: the renderer will finish it
            ref = replace(ref, extra={k: v for k, v in ref.extra.items() if k != PARTIAL})
        else:
            meta["rendered"] = view_hash(view)
        if position is not None:
            meta["position_at_submit"] = position
        await self.store.update(generation_id, message=ref.to_json(), meta=meta, ticket=ticket)
        try:
            await self.queue.publish(generation_id, "attached")
        except QueueUnavailable:  # the renderer re-renders every message once Redis is back
            log.warning("could not tell the renderer that %s was posted: Redis is unreachable", generation_id)

    async def view(self, gen: Generation, position: int | None = None) -> StatusView:
        """``position`` 0: just submitted and held aside (see :meth:`submit`)."""
        aside = None
        if position == 0:
            position, aside = None, "held"
        elif gen.state is State.QUEUED and position is None:
            position = await self.queue.position(gen.id, line=gen.backend)
            if position is None:
                aside = await self.queue.aside(gen)
        eta = None
        down = False
        try:
            if gen.state is State.QUEUED:
                basis = await self.queue.line_basis(gen.backend)
                if position is not None and basis.capacity:
                    eta = wait_seconds(position, basis.mean_run_s, basis.capacity)
                down = basis.down_in is not None
        except QueueUnavailable:  # shown without an ETA; the renderer fills it in later
            pass
        return build_view(
            gen, position, eta, aside=aside, backend_down=down, exact=self.settings.renderer.exact_positions
        )

    async def describe_queue(self, actor: Actor) -> str:
        gens = await self.store.list_for_user(
            actor.platform, actor.workspace, actor.user_id, [State.QUEUED, State.RUNNING]
        )
        if not gens:
            starts = " or ".join(f"/{key}" for key, (c, _) in self.plugins.commands.items() if c.job)
            return "You have no jobs in the queue." + (f" Start one with {starts}." if starts else "")
        lines = ["Your jobs:"]
        for gen in gens:
            view = await self.view(gen)
            prompt = gen.prompt if len(gen.prompt) <= 60 else gen.prompt[:59] + "…"
            lines.append(f"• job {gen.id}: {view.title} · {prompt}")
        return "\n".join(lines)

    async def _visible(self, actor: Actor, generation_id: int) -> Generation:
        gen = await self.store.get(generation_id)
        if gen is None or gen.platform != actor.platform or gen.workspace != actor.workspace:
            raise GenbotError(ErrorCode.NOT_FOUND)
        return gen

    async def cancel(
        self, actor: Actor, generation_id: int | None, *, reason: str | None = None, audit: bool = True
    ) -> Generation:
        """Cancel a queued or running job of ``actor`` (any job, for an admin: audited unless
        ``audit`` is False because the caller writes its own row).

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
        done = await self.cancel_row(gen, code)
        if done is None:  # finished in the meantime
            raise GenbotError(
                ErrorCode.NOT_FOUND, f"Job {gen.id} has already finished; there is nothing to cancel."
            )
        if by_admin and audit:
            await self.moderation.audit(
                actor, "cancel", target=f"job {gen.id}", reason=reason, details={"member": gen.user_id}
            )
        return done

    async def pause(self, actor: Actor, *, paused: bool) -> int | None:
        """Pause or resume ``actor``'s workspace; None when it already was so, else how many
        queued jobs were held (or released).

        Pausing takes the workspace's queued jobs out of Redis (the rows stay ``queued`` and keep
        their tickets); the Redis flag makes the submit script refuse new ones and a worker that
        picked one at that instant set it aside. Resuming puts them back at their own tickets, so
        they keep their place ahead of anything submitted later.

        Redis is brought in line with the database even when the database says nothing changed:
        a write retried after its reply was lost reads "unchanged", and what Redis then needs is
        the same. (Doing it again is harmless: a job out of the line stays out, one in stays in.)
        """
        changed = await self.moderation.set_paused(actor.platform, actor.workspace, paused, actor.user_id)
        if not changed and await self.queue.is_paused(actor.platform, actor.workspace) == paused:
            return None
        await self.queue.pause(actor.platform, actor.workspace, paused)
        queued = await self.store.list_workspace(actor.platform, actor.workspace, [State.QUEUED])
        for gen in sorted(queued, key=lambda g: (g.ticket is None, g.ticket or 0, g.id)):
            if paused:
                await self.queue.remove_waiting(gen.id, line=gen.backend)
            else:
                ticket = await self._put_back(gen)
                if ticket is not None and ticket != gen.ticket:
                    await self.store.update(gen.id, ticket=ticket)
            await self.queue.publish(gen.id, "dequeued")
        return len(queued)

    async def cancel_row(self, gen: Generation, code: ErrorCode) -> Generation | None:
        """Cancel the row (guarded), then take its job out of the queue, or stop it if it has
        started. Returns None when the row had already finished."""
        done = await self.store.transition(gen.id, State.CANCELLED, error_code=code.value)
        if done is None:
            return None
        try:
            await self._dequeue_cancelled(gen)
        except QueueUnavailable:
            # The row is cancelled, which is what counts: a worker that picks the job finds it
            # so and drops it, and the renderer shows it once Redis is back.
            log.warning("cancelled %s while Redis is unreachable; its job is dropped later", gen.id)
        return done

    async def _dequeue_cancelled(self, gen: Generation) -> None:
        if await self.queue.remove_waiting(gen.id, line=gen.backend):
            await self.queue.publish(gen.id, "dequeued")
        elif await self.queue.unhold(gen.member, gen.id):
            pass  # it was held aside (its member's running cap): it no longer counts as queued
        elif await self.queue.job_state(gen.id) == "running":
            # It has started (or is starting): the worker aborts it, and its next progress
            # report finds the row cancelled and stops the backend.
            await self.queue.abort_running(gen.id)
        # Else it was out of the line (paused, or waiting for the breaker in a worker, which
        # finds the row cancelled); a restore racing with this undoes itself (see _put_back).
        await self.queue.publish(gen.id, "finished")

    async def reconcile(self) -> int:
        """Heal, from the rows, what Redis forgot or what died. The bot runs it at start-up and
        the worker's sweep every ``worker.sweep_every_min`` minutes; safe to run at any time and
        from several processes. It reads no finished row: queued rows and stuck running rows are
        ranges of the ``(state, heartbeat_at)`` index, and the secrets are scrubbed by statements
        that use that index and ``(platform, finished_at)``.

        - A ``queued`` row whose arq job or waiting entry Redis lost is submitted again at its own
          ticket: its job and its place come back, in ticket order. Skipped while a worker holds
          the job (it is starting, or waiting for the circuit breaker), while its workspace is
          paused, while it is held aside because its member runs ``quota.max_running`` jobs, and
          for a few seconds after it was created (its submission may still be refused). The Redis
          mirrors of paused workspaces and of bans are brought in line with the database first.
        - (A ``running`` row whose worker died is :meth:`fail_over`'s, checked more often.)
        - Expired interaction tokens and response URLs are removed from the message references.

        Every change of a row is published, so its message is re-rendered. Returns how many rows
        it healed (the scrubbed secrets do not count: they change no message).
        """
        now = datetime.now(UTC)
        # Redis may have forgotten which tickets it gave, pauses and bans: the database says.
        healed = await self.check_tickets()
        healed += await self._heal_queued(now)
        # A secret outlives its row's end by at most its lifetime; two sweeps of slack.
        look_back = timedelta(seconds=SECRET_LIFETIME_S + 2 * 60 * self.settings.worker.sweep_every_min)
        scrubbed = await self.store.scrub_expired_secrets(
            now, platforms=[p.value for p in Platform], finished_since=now - look_back
        )
        if healed or scrubbed:
            log.info("reconcile: healed %d generations, scrubbed %d expired secrets", healed, scrubbed)
        return healed

    async def fail_over(self) -> int:
        """Take over every running job whose heartbeat stopped ``worker.failover_after_s`` ago:
        its worker died, or is cut off from the database. The job goes back in line at its ticket
        as a retry (``attempts`` + 1), whatever arq's in-progress key says, and its member's place
        is freed; after ``worker.stuck_retries`` retries it fails as ``stuck`` instead. A worker
        that comes back finds every write of its run fenced by the attempt number
        (:class:`jobs.runner.GenerationRunner`). The workers' sweepers run it every quarter of
        ``failover_after_s``; safe to run from several processes at once.

        A heartbeat can also stop because the database or the sweep's Redis was away, for the
        workers as for the sweep: so a job is only taken over once the checks have run without a
        gap (of half ``failover_after_s``) for half ``failover_after_s``, time enough for every live
        run to beat again (a run beats every sixth of it). Returns how many jobs it took over or
        failed."""
        after = self.settings.worker.failover_after_s
        stale_before = datetime.now(UTC) - timedelta(seconds=after)
        stale = await self.store.list_stuck(stale_before)
        # After the read: a check that could not read the rows does not count as one.
        if await self.queue.failover_watch(gap_s=self.settings.worker.failover_gap_s) < after / 2:
            return 0
        healed = 0
        for gen in stale:
            healed += await self._take_over(gen, stale_before)
        return healed

    async def _take_over(self, gen: Generation, stale_before: datetime) -> int:
        """Put a dead run's job back in line (see :meth:`fail_over`). The row first, in one
        statement that names the attempt it replaces and asks again that its heartbeat be stale:
        of several checks at once (or a worker that finds the job in arq's queue) one wins, and a
        run that beat meanwhile is left alone. Then Redis: only the winner lets go of the dead
        run's hold. Should this process die between the two, the job is late, not lost: it waits
        for arq's in-progress key to expire, and the sweep puts it back."""
        if gen.attempts >= self.settings.worker.stuck_retries:
            failed = await self.store.transition(
                gen.id,
                State.FAILED,
                error_code=ErrorCode.STUCK.value,
                attempt=gen.attempts,
                stale_before=stale_before,
            )
            if failed is None:
                return 0
            await self.queue.take_over(gen.id, gen.member)
            await self.queue.remove_waiting(gen.id, line=gen.backend)
            await self.queue.publish(gen.id, "finished")
            SWEEP_ACTIONS.labels("failed_stuck").inc()
            return 1
        back = await self.store.transition(
            gen.id, State.QUEUED, retry=True, attempt=gen.attempts, stale_before=stale_before
        )
        if back is None:
            return 0  # it beat again, ended, or another check took it over
        # Before the job can start again, so that it never wipes the new run's first report.
        await self.store.update_meta(
            gen.id, {"progress": None, "preview": None, "text": None, "waiting": None}
        )
        await self.queue.take_over(gen.id, gen.member)
        ticket = await self._put_back(back)
        log.warning(
            "generation %s: its worker stopped beating (attempt %d); back in line at ticket %s",
            gen.id,
            gen.attempts,
            ticket,
        )
        if ticket is None:
            return 0  # cancelled meanwhile
        SWEEP_ACTIONS.labels("failed_over").inc()
        return await self._restored(back, ticket)

    async def _heal_queued(self, now: datetime, *, new_tickets: bool = True) -> int:
        """Bring the Redis mirrors of paused workspaces and bans in line with the database, then
        put back in line every queued row whose job or waiting entry Redis lost (see
        :meth:`reconcile`); with ``new_tickets`` False only those that have a ticket (while the
        ticket counter is being seeded). Returns how many it put back."""
        healed = 0
        waited = await self.queue.leave_legacy_line()
        if waited:
            log.info("moving %d jobs of the queue before lines into their lines", len(waited))
        await self.queue.sync_paused(self.moderation.paused_workspaces)
        await self.queue.sync_bans(self._bans_in_force)
        paused = set(await self.moderation.paused_workspaces())
        queued = await self.store.list_queued()
        lost: list[Generation] = []  # out of place: put back in line, all at once
        for gen, state in zip(queued, await self.queue.queued_states(queued), strict=True):
            if gen.ticket is None and gen.id in waited:  # its ticket was only in the old line
                await self.store.update(gen.id, ticket=waited[gen.id])
                gen = replace(gen, ticket=waited[gen.id])
            if not self._served(gen):
                healed += await self._fail_unserved(gen)
                continue
            if gen.ticket is None and not gen.message.get("message_id"):
                # Never in line, and never posted: its bot died between the two. Its message is
                # posted first (by a renderer of its platform, once the command is surely dead);
                # the row joins the line at the next sweep after that.
                if gen.created_at <= now - SUBMIT_GRACE and not gen.meta.get("unreachable"):
                    await self.queue.publish(gen.id, "unposted")
                continue
            if (
                state.held_by_worker
                or state.in_place
                or (gen.platform, gen.workspace) in paused
                or (gen.ticket is None and (not new_tickets or gen.created_at > now - SUBMIT_GRACE))
                or (state.held_aside and await self.queue.held_behind_running(gen.member, gen.id))
            ):
                continue
            lost.append(gen)
        return healed + await self._put_back_many(lost)

    async def _put_back_many(self, gens: list[Generation]) -> int:
        """Put ``gens`` (queued rows whose job or waiting entry Redis lost) back in line at their
        tickets: pipelined restores, one read of the rows after (a row that moved on meanwhile
        gives its place back), pipelined events. Returns how many went back."""
        if not gens:
            return 0
        jobs = [(gen.id, gen.ticket, gen.backend) for gen in gens]
        try:
            restored = await self.queue.restore_many(jobs)
        except TicketsLost:
            await self.seed_tickets()
            try:
                restored = await self.queue.restore_many(jobs)
            except TicketsLost:  # Redis restarted again meanwhile
                raise QueueUnavailable from None
        now = {gen.id: gen for gen in await self.store.get_many([gen.id for gen in gens])}
        back: list[int] = []
        for gen, (ticket, _position, added) in zip(gens, restored, strict=True):
            if not added:
                continue
            current = now.get(gen.id)
            if current is None or current.state is not State.QUEUED:
                await self.queue.remove_waiting(gen.id, line=gen.backend)  # it moved on meanwhile
                continue
            if ticket != gen.ticket:
                await self.store.update(gen.id, ticket=ticket)
            back.append(gen.id)
        await self.queue.publish_many(back, "dequeued")
        SWEEP_ACTIONS.labels("requeued").inc(len(back))
        return len(back)

    def _served(self, gen: Generation) -> bool:
        """Whether a job of ``gen``'s kind and backend can run here: its plugin is loaded and
        the backend is one of its kind's (the settings may have dropped it since)."""
        found = self.plugins.kind(gen.kind)
        return found is not None and gen.backend in found[0].lines

    async def _fail_unserved(self, gen: Generation) -> int:
        """A queued job whose kind or backend is no longer configured would wait for ever in a
        line no worker serves: it fails as a service error (trying again runs it where the
        workspace's jobs run now)."""
        if (
            await self.store.transition(gen.id, State.FAILED, error_code=ErrorCode.BACKEND_ERROR.value)
            is None
        ):
            return 0
        log.warning(
            "job %s of kind %r waited for backend %r, which the settings no longer name: failed",
            gen.id,
            gen.kind,
            gen.backend,
        )
        await self.queue.remove_waiting(gen.id, line=gen.backend)
        await self.queue.publish(gen.id, "finished")
        SWEEP_ACTIONS.labels("failed_unserved").inc()
        return 1

    async def _put_back(self, gen: Generation) -> int | None:
        """Put a queued job back in line at its ticket; None if it turned out to have moved on."""
        ticket, _position, _restored = await self._restore(gen)
        return ticket if await self._still_queued(gen) else None

    async def _still_queued(self, gen: Generation) -> bool:
        """After a restore from a snapshot of the rows: if the row moved on meanwhile (cancelled,
        or started), take back the waiting entry the restore made, so no job that will never
        start holds a place."""
        current = await self.store.get(gen.id)
        if current is not None and current.state is State.QUEUED:
            return True
        await self.queue.remove_waiting(gen.id, line=gen.backend)
        return False

    async def _bans_in_force(self) -> list[tuple[str, datetime | None]]:
        return [(b.member, b.expires_at) for b in await self.moderation.all_bans()]

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


def _texts(spec: CommandSpec, options: dict[str, Any]) -> list[str]:
    """The values of the text options: what blocked terms are checked on."""
    return [
        value
        for name, value in options.items()
        if isinstance(value, str) and (option := spec.option(name)) is not None and option.type == "string"
    ]


def _json(value: Any) -> Any:
    """A job option as JSON: an :class:`Attachment` as its facts."""
    return value.to_json() if isinstance(value, Attachment) else value


def _default_request(spec: CommandSpec, options: dict[str, Any]) -> JobRequest:
    """A job command without ``prepare``: its first text option is the job's text (a required
    one first), and every option is kept."""
    texts = sorted((o for o in spec.options if o.type == "string"), key=lambda o: not o.required)
    text = next((str(options[o.name]) for o in texts if o.name in options), "")
    return JobRequest(text, options)
