"""Lines: the jobs of each backend wait in a line of their own, against the real Redis. A position
counts the jobs ahead in the same line (however many wait in others); tickets stay unique and in
order over all lines; a member's running cap moves their jobs aside whatever line they wait in; a
worker serves the lines it is given; and the one line of releases before lines empties into the
lines of its rows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from bot.app import Runtime, all_lines, plugins_of, runtime
from bot.config import ConfigError, Settings
from bot.embedded_redis import EmbeddedRedis
from bot.models import JOB_ID_PREFIX, Actor, State
from bot.ports import QuotaRefused
from jobs.backends.base import ImageRequest
from jobs.worker import served_lines
from tests.conftest import make_settings
from tests.image_jobs import image_job

ALICE = Actor("local", "local", "alice", "Alice")
BOB = Actor("local", "local", "bob", "Bob")
LINES = ("demo", "a1111")


def request(prompt: str) -> ImageRequest:
    return ImageRequest(prompt, "", 64, 64, 2, 1)


@pytest.fixture
def two_lines(redis_server: EmbeddedRedis, sqlite_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        redis_server.url,
        sqlite_url,
        tmp_path,
        backend={"name": "demo", "choices": ["a1111"]},
        backends={"a1111": {"url": "http://127.0.0.1:9"}},
    )


async def test_each_line_counts_only_its_own_jobs_under_concurrent_submissions(rt: Runtime) -> None:
    """200 submissions at once, alternating between two lines: tickets unique over both, and in
    each line the positions are 1..100 in ticket order, with the arq job in that line's queue."""
    made = [
        await rt.store.create(image_job(ALICE, "general", request(f"fox {n}"), backend=LINES[n % 2]))
        for n in range(200)
    ]
    results = await asyncio.gather(*(rt.queue.submit(gen.id, line=gen.backend) for gen in made))

    tickets = [ticket for ticket, _position in results]
    assert sorted(tickets) == list(range(1, 201)), "one ticket each, none given twice"
    for line in LINES:
        mine = sorted(
            (
                (ticket, position, gen.id)
                for gen, (ticket, position) in zip(made, results, strict=True)
                if gen.backend == line
            )
        )
        assert [position for _t, position, _id in mine] == list(range(1, 101)), f"gapless in {line}"
        waiting = await rt.queue.waiting(line)
        assert waiting == [gid for _t, _p, gid in mine]
        queued = await rt.redis.zrange(rt.queue.line_queue(line), 0, -1)
        assert [m.decode() for m in queued] == [f"{JOB_ID_PREFIX}{gid}" for gid in waiting]
    assert await rt.queue.waiting() == [gen.id for gen in sorted(made, key=lambda g: tickets[made.index(g)])]
    assert sorted(await rt.queue.lines()) == sorted(LINES)


async def test_a_job_in_one_line_waits_behind_none_of_another(rt: Runtime) -> None:
    busy = [
        (await rt.core.submit(image_job(ALICE, "general", request(f"a{n}"), backend="a1111")))[0]
        for n in range(5)
    ]
    gen, position = await rt.core.submit(image_job(BOB, "general", request("quick"), backend="demo"))
    assert position == 1, "five jobs wait for a1111: none of them is ahead of a demo job"
    view = await rt.core.view(gen)
    assert view.headline.startswith("Queued · #1 in line"), view.headline
    assert [await rt.queue.position(g.id, line="a1111") for g in busy] == [1, 2, 3, 4, 5]
    assert await rt.queue.position(gen.id, line="a1111") is None


async def test_the_running_cap_sets_a_members_jobs_aside_in_every_line(rt: Runtime) -> None:
    """Alice may run one job at a time: when one of hers starts in one line, her job waiting in
    the other leaves that line (its arq job too), keeping its ticket; when hers ends, it comes back
    to its own line at that ticket."""
    quota = rt.core.quota_for(ALICE)  # a member's submission: it counts as theirs
    first, _ = await rt.core.submit(
        image_job(ALICE, "general", request("first"), backend="demo"), quota=quota
    )
    other, _ = await rt.core.submit(
        image_job(ALICE, "general", request("other"), backend="a1111"), quota=quota
    )
    ticket = await rt.queue.ticket_of(other.id, line="a1111")

    started, moved = await rt.queue.start(
        first.id, ALICE.member, 1, 1, workspace=("local", "local"), line="demo"
    )

    assert started is True and moved == [other.id]
    assert await rt.queue.position(other.id, line="a1111") is None
    assert await rt.redis.zcard(rt.queue.line_queue("a1111")) == 0
    held = await rt.queue.release(ALICE.member, first.id, 1)
    assert held == (other.id, ticket)
    await rt.queue.restore(other.id, ticket, line="a1111")
    assert await rt.queue.position(other.id, line="a1111") == 1
    assert await rt.redis.zcard(rt.queue.line_queue("a1111")) == 1


async def test_the_member_limit_counts_waiting_jobs_over_all_lines(rt: Runtime) -> None:
    from bot.models import Quota

    quota = Quota(
        member=ALICE.member,
        workspace=("local", "local"),
        max_queued=2,
        rate_count=100,
        rate_window_s=60,
        global_max=100,
        exempt=False,
        max_running=5,
    )
    for line in LINES:
        gen = await rt.store.create(image_job(ALICE, "general", request(line), backend=line))
        await rt.queue.submit(gen.id, line=line, quota=quota)
    third = await rt.store.create(image_job(ALICE, "general", request("third"), backend="demo"))
    with pytest.raises(QuotaRefused) as refused:
        await rt.queue.submit(third.id, line="demo", quota=quota)
    assert refused.value.reason == "queued"


@pytest_asyncio.fixture
async def rt2(two_lines: Settings, redis: Redis) -> AsyncIterator[Runtime]:
    """A deployment with two backends, demo (the default) and a1111."""
    async with runtime(two_lines) as value:
        await value.core.check_tickets()
        yield value


async def test_jobs_of_the_one_line_before_lines_move_into_their_own(rt2: Runtime) -> None:
    """A Redis left by a release before lines: its one waiting set and arq queue hold the jobs, and
    the members' queued sets bare ids. The heal takes them out and puts each row back in its own
    line at its ticket (one that only Redis knew included); a job a worker of the old release still
    runs keeps its keys; the members' old entries still count for their quota."""
    rt = rt2
    rows = []
    for n, line in enumerate(("a1111", "demo", "a1111")):
        gen = await rt.store.create(image_job(ALICE, "general", request(f"old {n}"), backend=line))
        if n != 1:  # the second's ticket never reached its row: its command was caught in between
            await rt.store.update(gen.id, ticket=n + 1)
        rows.append(gen)
    running = await rt.store.create(image_job(BOB, "general", request("running"), backend="demo"))
    legacy_queue = rt.settings.redis.queue_name
    for n, gen in enumerate(rows):
        await rt.redis.zadd(rt.queue.keys.legacy_waiting, {str(gen.id): n + 1})
        await rt.redis.zadd(legacy_queue, {f"{JOB_ID_PREFIX}{gen.id}": n + 1})
        await rt.redis.set(f"arq:job:{JOB_ID_PREFIX}{gen.id}", b"old payload")
        await rt.redis.zadd(rt.queue.keys.member_queued(ALICE.member), {str(gen.id): n + 1})
    await rt.redis.zadd(legacy_queue, {"someone-elses-job": 1, f"{JOB_ID_PREFIX}{running.id}": 0})
    await rt.redis.set(f"arq:job:{JOB_ID_PREFIX}{running.id}", b"old payload")
    await rt.redis.set(f"arq:in-progress:{JOB_ID_PREFIX}{running.id}", b"1")

    await rt.core.reconcile()

    assert not await rt.redis.exists(rt.queue.keys.legacy_waiting)
    assert await rt.redis.zrange(legacy_queue, 0, -1) == [
        f"{JOB_ID_PREFIX}{running.id}".encode(),
        b"someone-elses-job",
    ], "only genbot's jobs moved, and not one an old worker runs"
    assert await rt.redis.exists(f"arq:job:{JOB_ID_PREFIX}{running.id}")
    assert await rt.queue.waiting("a1111") == [rows[0].id, rows[2].id]
    assert await rt.queue.waiting("demo") == [rows[1].id]
    assert [await rt.queue.ticket_of(g.id, line=g.backend) for g in rows] == [1, 2, 3]
    assert (await rt.store.get(rows[1].id)).ticket == 2  # type: ignore[union-attr]
    for gen in rows:
        assert await rt.queue.job_state(gen.id) == "queued"
        assert (await rt.store.get(gen.id)).state is State.QUEUED  # type: ignore[union-attr]

    quota = replace(rt.core.quota_for(ALICE), max_queued=3)
    extra = await rt.store.create(image_job(ALICE, "general", request("one too many"), backend="demo"))
    with pytest.raises(QuotaRefused):
        await rt.queue.submit(extra.id, line="demo", quota=quota)
    entries = sorted(
        m.decode() for m in await rt.redis.zrange(rt.queue.keys.member_queued(ALICE.member), 0, -1)
    )
    assert entries == sorted(f"{g.id}@{g.backend}" for g in rows), "the old entries, rewritten"


async def test_a_job_of_a_backend_no_longer_configured_fails_instead_of_waiting_for_ever(rt: Runtime) -> None:
    """Rows queued for a backend the settings dropped (or a kind no plugin defines) would wait in a
    line no worker serves: the heal fails them as a service error, and leaves the others."""
    kept, _ = await rt.core.submit(image_job(ALICE, "general", request("kept"), backend="demo"))
    dropped, _ = await rt.core.submit(image_job(ALICE, "general", request("dropped"), backend="horde"))

    await rt.core.reconcile()

    gone = await rt.store.get(dropped.id)
    assert gone is not None and gone.state is State.FAILED and gone.error_code == "backend_error"
    assert await rt.queue.waiting("horde") == []
    assert await rt.queue.waiting("demo") == [kept.id]


def serving(settings: Settings, *lines: str) -> Settings:
    return settings.model_copy(update={"worker": settings.worker.model_copy(update={"lines": list(lines)})})


async def test_a_worker_serves_the_lines_it_is_given(two_lines: Settings, redis: Redis) -> None:
    lines = all_lines(plugins_of(two_lines))
    assert lines == ["demo", "a1111"], "the default first"
    assert served_lines(two_lines, lines) == {"demo": 1, "a1111": 1}
    assert served_lines(serving(two_lines, "a1111=3"), lines) == {"a1111": 3}
    with pytest.raises(ConfigError, match="LINES: no job kind runs on 'horde'; the lines are demo, a1111"):
        served_lines(serving(two_lines, "horde"), lines)
    with pytest.raises(ConfigError, match="the jobs at once are 1 to 64"):
        served_lines(serving(two_lines, "demo=0"), lines)
    async with runtime(two_lines) as rt:
        assert rt.core.plugins.choosable_backends() == ("demo", "a1111")
