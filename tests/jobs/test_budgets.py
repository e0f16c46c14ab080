"""The write budgets every bot process shares: token buckets in the real Redis."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from bot.ports import Rate, Spend
from jobs.budgets import RedisBudgets

RATES = {"chan": Rate(per_s=2.0, burst=3), "ws": Rate(per_s=10.0, burst=2)}


async def test_a_burst_is_taken_then_the_rest_waits_its_refill(redis: Redis) -> None:
    budgets = RedisBudgets(redis, "gt", RATES)
    spend = [Spend("chan", "C1")]
    assert [await budgets.take(spend) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = await budgets.take(spend)
    assert 0.4 < wait <= 0.5, "one token at 2 per second"
    assert await budgets.take([Spend("chan", "C2")]) == 0.0, "another channel has its own bucket"
    await asyncio.sleep(wait)
    assert await budgets.take(spend) == 0.0


async def test_all_spends_of_a_write_are_taken_together_or_none(redis: Redis) -> None:
    budgets = RedisBudgets(redis, "gt", RATES)
    both = [Spend("chan", "C1"), Spend("ws", "")]
    assert await budgets.take(both) == 0.0
    assert await budgets.take(both) == 0.0
    assert await budgets.take(both) > 0, "the workspace's burst of 2 is spent"
    # The refused write took nothing from the channel: it still has its third token.
    assert await budgets.take([Spend("chan", "C1")]) == 0.0


async def test_a_write_dearer_than_the_burst_goes_when_full_and_leaves_a_debt(redis: Redis) -> None:
    budgets = RedisBudgets(redis, "gt", RATES)
    image = [Spend("chan", "C1", cost=5)]
    assert await budgets.take(image) == 0.0
    wait = await budgets.take([Spend("chan", "C1")])
    assert 1.4 < wait <= 1.5, "two tokens owed, then one to take, at 2 per second"


async def test_a_hold_stops_its_scope_in_every_process(redis: Redis) -> None:
    one, two = RedisBudgets(redis, "gt", RATES), RedisBudgets(redis, "gt", RATES)
    await one.hold("chan:C1", 1.5)
    wait = await two.take([Spend("chan", "C1")])
    assert 1.3 < wait <= 1.5
    assert await two.take([Spend("chan", "C2")]) == 0.0
    await two.hold("chan:C1", 0.2)  # a shorter hold does not shorten the longer one
    assert await one.take([Spend("chan", "C1")]) > 1.0


async def test_two_processes_together_stay_within_one_budget(redis: Redis) -> None:
    """Two bot processes (two clients, two budgets objects) racing for one channel: in 1 s they
    get the burst plus the refill of 1 s, not twice that."""
    rates = {"chan": Rate(per_s=20.0, burst=5)}
    budgets = [RedisBudgets(Redis.from_url(_url(redis)), "gt", rates) for _ in range(2)]
    taken = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + 1.0

    async def writer(b: RedisBudgets) -> None:
        nonlocal taken
        while loop.time() < end:
            wait = await b.take([Spend("chan", "C1")])
            if wait == 0:
                taken += 1
            else:
                await asyncio.sleep(min(wait, end - loop.time()) if end > loop.time() else 0)

    try:
        await asyncio.gather(*(writer(b) for b in budgets for _ in range(4)))
    finally:
        for b in budgets:
            await b.redis.aclose()
    assert 5 + 15 <= taken <= 5 + 20 + 1, taken


def _url(redis: Redis) -> str:
    kw = redis.connection_pool.connection_kwargs
    return f"redis://{kw['host']}:{kw['port']}/{kw.get('db', 0)}"
