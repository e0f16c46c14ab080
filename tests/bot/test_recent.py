"""The per-workspace cache of the core (blocked terms, limits, the chosen backend): one load per
key however many requests want it at once, and a forget that no load in flight undoes."""

from __future__ import annotations

import asyncio

from bot.service import Recent

KEY = ("local", "local")


async def test_callers_of_a_stale_key_share_one_load() -> None:
    recent: Recent[int] = Recent(ttl_s=60)
    loads = 0
    gate = asyncio.Event()

    async def load() -> int:
        nonlocal loads
        loads += 1
        await gate.wait()
        return 42

    callers = [asyncio.create_task(recent.get(KEY, load)) for _ in range(50)]
    await asyncio.sleep(0)
    callers[0].cancel()  # one caller gives up: the others still get the value
    gate.set()
    results = await asyncio.gather(*callers[1:])
    assert results == [42] * 49
    assert loads == 1
    assert await recent.get(KEY, load) == 42 and loads == 1, "kept for the TTL"


async def test_a_failed_load_is_not_kept_and_a_forget_wins_over_a_load_in_flight() -> None:
    recent: Recent[str] = Recent(ttl_s=60)
    gate = asyncio.Event()
    answers = iter(["old", "new"])

    async def failing() -> str:
        raise RuntimeError("the database is away")

    async def slow() -> str:
        await gate.wait()
        return next(answers)

    for _ in range(2):
        try:
            await recent.get(KEY, failing)
        except RuntimeError:
            pass
        else:
            raise AssertionError("the failure reaches the caller")
    in_flight = asyncio.create_task(recent.get(KEY, slow))
    await asyncio.sleep(0)
    recent.forget(KEY)  # an admin changed it while the old value was being read
    gate.set()
    assert await in_flight == "old"
    assert await recent.get(KEY, slow) == "new", "the value read before the forget was not kept"
