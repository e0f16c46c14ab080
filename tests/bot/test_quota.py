"""Quotas under real concurrency: 50 submissions at once against the real Redis and database never
get past the limits, and every refused one leaves nothing behind."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from redis.asyncio import Redis

from bot.app import Runtime, runtime
from bot.embedded_redis import EmbeddedRedis
from bot.models import Actor, State
from storage.models import GenerationRow
from tests.bot.test_service import Recorder, run
from tests.conftest import make_settings

ALICE = Actor("local", "local", "alice", "Alice")
ADMIN = Actor("local", "local", "admin", "Admin", is_admin=True)


@asynccontextmanager
async def quota_runtime(
    redis_server: EmbeddedRedis, db_url: str, tmp_path: Path, **quota: object
) -> AsyncIterator[Runtime]:
    settings = make_settings(
        redis_server.url,
        db_url,
        tmp_path,
        quota={"max_queued": 1000, "rate_count": 10_000, "global_max": 10_000, **quota},
    )
    async with runtime(settings) as rt:
        yield rt


async def burst(rt: Runtime, actors: Callable[[int], Actor], n: int = 50) -> list[Recorder]:
    """``n`` /imagine at once, each on its own task (and its own pooled Redis connection)."""
    return list(await asyncio.gather(*(run(rt, actors(i), "imagine", prompt=f"p{i}") for i in range(n))))


def outcomes(results: list[Recorder]) -> Counter[str]:
    return Counter("posted" if r.posted else r.errors[0].code.value for r in results)


async def test_50_concurrent_submissions_of_one_member_never_pass_the_queued_cap(
    redis_server: EmbeddedRedis, redis: Redis, db_url: str, tmp_path: Path
) -> None:
    async with quota_runtime(redis_server, db_url, tmp_path, max_queued=3) as rt:
        results = await burst(rt, lambda _i: ALICE)
        assert outcomes(results) == {"posted": 3, "queue_full": 47}
        refused = next(r for r in results if r.errors)
        assert refused.errors[0].what == "You already have 3 requests waiting, the most one member may have."
        assert len(await rt.queue.waiting()) == 3
        # the refused rows were discarded: only the three queued jobs exist
        assert await GenerationRow.all().count() == 3
        # a job leaving the queue frees a place
        first = next(r for r in results if r.posted).posted[0].job
        await run(rt, ALICE, "cancel", job=str(first))
        assert outcomes(await burst(rt, lambda _i: ALICE, 10)) == {"posted": 1, "queue_full": 9}


async def test_50_concurrent_submissions_never_pass_the_rate_limit(
    redis_server: EmbeddedRedis, redis: Redis, db_url: str, tmp_path: Path
) -> None:
    async with quota_runtime(redis_server, db_url, tmp_path, rate_count=10, rate_window_s=600) as rt:
        results = await burst(rt, lambda _i: ALICE)
        assert outcomes(results) == {"posted": 10, "rate_limited": 40}
        what = next(r for r in results if r.errors).errors[0].what
        assert what.startswith(
            "You have sent 10 requests in the last 10 min; you can send the next one in about "
        )
        # cancelling does not give the rate back: it counts requests sent, not waiting
        job = next(r for r in results if r.posted).posted[0].job
        await run(rt, ALICE, "cancel", job=str(job))
        assert outcomes(await burst(rt, lambda _i: ALICE, 5)) == {"rate_limited": 5}
        assert await GenerationRow.all().count() == 10


async def test_the_global_cap_holds_across_members(
    redis_server: EmbeddedRedis, redis: Redis, db_url: str, tmp_path: Path
) -> None:
    async with quota_runtime(redis_server, db_url, tmp_path, global_max=20, max_queued=3) as rt:
        results = await burst(rt, lambda i: Actor("local", "local", f"m{i % 10}", f"M{i % 10}"))
        counts = outcomes(results)
        assert counts["posted"] == 20
        assert counts["queue_full"] == 30
        assert len(await rt.queue.waiting()) == 20
        per_member = Counter(g.user_id for g in await rt.store.list_active())
        assert max(per_member.values()) <= 3
        full = [r.errors[0].what for r in results if r.errors]
        assert "The queue is full: 20 requests are waiting." in full


async def test_admins_are_exempt_from_member_limits_when_configured(
    redis_server: EmbeddedRedis, redis: Redis, db_url: str, tmp_path: Path
) -> None:
    async with quota_runtime(redis_server, db_url, tmp_path, max_queued=1, rate_count=2) as rt:
        assert outcomes(await burst(rt, lambda _i: ADMIN, 10)) == {"posted": 10}
    async with quota_runtime(redis_server, db_url, tmp_path, max_queued=1, admins_exempt=False) as rt:
        assert outcomes(await burst(rt, lambda _i: ADMIN, 5)) == {"queue_full": 5}


async def test_refusals_are_counted_in_the_stats(
    redis_server: EmbeddedRedis, redis: Redis, db_url: str, tmp_path: Path
) -> None:
    async with quota_runtime(redis_server, db_url, tmp_path, max_queued=2) as rt:
        await burst(rt, lambda _i: ALICE, 5)
        stats = (await run(rt, ADMIN, "admin stats")).replies[0]
        assert "requests: 2 (0 succeeded, 2 still queued or running)" in stats
        assert "refused: queue_full 3" in stats
        assert [g.state for g in await rt.store.list_active()] == [State.QUEUED, State.QUEUED]
