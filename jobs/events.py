"""The event stream: workers and the core append ``{id, kind}``; renderers read it through a
consumer group (at-least-once: an event stays pending until acknowledged, and a crashed renderer's
pending events are claimed by the next one)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, NoReturn

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from bot.ports import Event, EventsLost
from jobs.connections import unavailable_on_outage


@unavailable_on_outage
class RedisEventFeed:
    def __init__(self, redis: Redis, stream: str, group: str, consumer: str) -> None:
        self.redis = redis
        self.stream = stream
        self.group = group
        self.consumer = consumer
        #: Events handled, whose acks go with the next read (``ack(later=True)``).
        self._later: list[str] = []

    async def ensure_group(self, start: str = "$") -> None:
        """Create the consumer group (and the stream) if missing. Safe to call again. A new
        deployment starts at the end of the stream (``$``: the rows say where every message
        stands); after Redis lost the group, from the start (``0``: everything since then)."""
        with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
            await self.redis.xgroup_create(self.stream, self.group, id=start, mkstream=True)

    async def forget_idle_consumers(self, idle_ms: int) -> int:
        """Remove the group's consumers (other than this one) that hold no pending event and
        have not read for ``idle_ms``: the renderers of stopped bots, one per start, which would
        pile up otherwise. A consumer with pending events stays until they are claimed. Returns
        how many went."""
        try:
            consumers = await self.redis.xinfo_consumers(self.stream, self.group)
        except ResponseError:  # no stream or group yet: nothing to forget
            return 0
        gone = 0
        for consumer in consumers:
            name = consumer["name"]
            name = name.decode() if isinstance(name, bytes) else str(name)
            if name != self.consumer and int(consumer["pending"]) == 0 and int(consumer["idle"]) > idle_ms:
                await self.redis.xgroup_delconsumer(self.stream, self.group, name)
                gone += 1
        return gone

    @staticmethod
    def _events(entries: Sequence[Any]) -> list[Event]:
        events = []
        for entry_id, fields in entries:
            if not fields:  # deleted by a trim while pending
                continue
            raw_id = fields.get(b"id") or fields.get("id")
            kind = fields.get(b"kind") or fields.get("kind") or b""
            if raw_id is None:
                continue
            events.append(
                Event(
                    entry_id=entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id),
                    generation_id=int(raw_id),
                    kind=kind.decode() if isinstance(kind, bytes) else str(kind),
                )
            )
        return events

    async def read(self, count: int, block_ms: int) -> list[Event]:
        """The next events for this consumer; the acks put off by ``ack(later=True)`` go first,
        in the same round trip."""
        acks, self._later = self._later, []
        streams: dict[Any, Any] = {self.stream: ">"}
        try:
            if not acks:
                reply = await self.redis.xreadgroup(
                    self.group, self.consumer, streams, count=count, block=block_ms
                )
            else:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.xack(self.stream, self.group, *acks)
                    pipe.xreadgroup(self.group, self.consumer, streams, count=count, block=block_ms)
                    _acked, reply = await pipe.execute()
        except ResponseError as exc:
            await self._lost(exc)
        except BaseException:
            self._later = acks + self._later  # not sent: with the next read
            raise
        return [ev for _stream, entries in reply or [] for ev in self._events(entries)]

    async def _lost(self, exc: ResponseError) -> NoReturn:
        """The group is gone: Redis lost its data. Start over from what the stream holds now,
        and say that events were lost."""
        if "NOGROUP" not in str(exc):
            raise exc
        await self.ensure_group(start="0")
        raise EventsLost from None

    async def ack(self, events: Sequence[Event], *, later: bool = False) -> None:
        if later:
            self._later += [e.entry_id for e in events]
            return
        ids = [*self._later, *(e.entry_id for e in events)]
        self._later = []
        if ids:
            await self.redis.xack(self.stream, self.group, *ids)

    async def claim_stale(self, min_idle_ms: int, count: int) -> list[Event]:
        try:
            reply = await self.redis.xautoclaim(
                self.stream, self.group, self.consumer, min_idle_time=min_idle_ms, count=count
            )
        except ResponseError as exc:
            await self._lost(exc)
        return self._events(reply[1])
