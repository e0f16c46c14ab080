"""The whole path through the local chat's own HTTP and WebSocket API, with a real worker,
renderer, Redis and database."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from PIL import Image
from redis.asyncio import Redis

from bot.app import Runtime, runtime
from bot.config import Settings
from bot.models import State
from storage.models import GenerationRow
from tests.chat_client import ChatClient
from tests.stack import bot_running, stack_running, worker_running


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_imagine_shows_position_progress_and_image(rt: Runtime, http: aiohttp.ClientSession) -> None:
    async with stack_running(rt) as base:
        alice = ChatClient(http, base, "alice")
        await alice.connect()
        for prompt in ("a red fox in snow", "a blue whale", "a green owl"):
            assert (await alice.command(f"/imagine {prompt} steps: 8")) == {"ok": True}

        last = await alice.wait_for(
            lambda m: (
                bool(m.get("status"))
                and m["status"]["prompt"] == "a green owl"
                and m["status"]["state"] == "succeeded"
            ),
            timeout=30,
        )
        job = last["status"]["job"]
        seen = [
            u["status"]["headline"] for u in alice.updates if u.get("status") and u["status"]["job"] == job
        ]
        assert seen[0].startswith("Queued · #3 in line")
        assert any(h.startswith("Queued · #2 in line") for h in seen), seen
        assert any(h.startswith("Queued · #1 in line") for h in seen), seen
        assert any(h.startswith("Generating · ") and h.endswith("%") for h in seen), seen
        statuses = [u["status"] for u in alice.updates if u.get("status") and u["status"]["job"] == job]
        assert any(s["preview_url"] for s in statuses if s["state"] == "running")
        assert last["status"]["image_url"]
        async with http.get(base + last["status"]["image_url"]) as resp:
            assert resp.status == 200
            image = Image.open(io.BytesIO(await resp.read()))
            assert image.size == (512, 512)
        gen = await rt.store.get(job)
        assert gen is not None and gen.state is State.SUCCEEDED
        await alice.close()


async def test_bot_restart_mid_job_rerenders_from_the_row(
    rt: Runtime, http: aiohttp.ClientSession, redis: Redis
) -> None:
    """The bot dies while a job runs and the job's events are lost; the new bot process still
    brings the same message to the final image, from the row alone."""
    async with worker_running(rt):
        async with bot_running(rt) as (base, _stop):
            alice = ChatClient(http, base, "alice")
            await alice.connect()
            await alice.command("/imagine a slow snail steps: 50")
            running = await alice.wait_for(
                lambda m: bool(m.get("status")) and m["status"]["state"] == "running"
            )
            await alice.close()
        # The bot is down. Lose every event the worker publishes from now on.
        await redis.delete(rt.queue.keys.events)
        gen_id = running["status"]["job"]
        for _ in range(200):
            gen = await rt.store.get(gen_id)
            assert gen is not None
            if gen.state is State.SUCCEEDED:
                break
            await asyncio.sleep(0.05)
        assert gen.state is State.SUCCEEDED
        await redis.delete(rt.queue.keys.events)

        async with bot_running(rt) as (base, _stop):
            alice = ChatClient(http, base, "alice")
            await alice.connect()
            history = {m["id"]: m for m in await alice.history()}
            done = (
                await alice.wait_for(
                    lambda m: m["id"] == running["id"] and m["status"]["state"] == "succeeded"
                )
                if history[running["id"]]["status"]["state"] != "succeeded"
                else history[running["id"]]
            )
            assert done["status"]["image_url"] == f"/blobs/results/{gen_id}.png"
            status_cards = [m for m in await alice.history() if m.get("status")]
            assert len(status_cards) == 1, "edited in place, not posted again"
            await alice.close()


async def test_cancel_a_queued_job_moves_the_ones_behind_it_up(
    settings: Settings, redis: Redis, http: aiohttp.ClientSession
) -> None:
    slow = settings.model_copy(
        update={"backend": settings.backend.model_copy(update={"demo_step_delay_s": 0.1})}
    )
    async with runtime(slow) as rt, stack_running(rt) as base:
        alice, bob = ChatClient(http, base, "alice"), ChatClient(http, base, "bob")
        await alice.connect()
        await bob.connect()
        await alice.command("/imagine first steps: 30")
        await alice.command("/imagine second steps: 5")
        # Alice's commands run in the order sent; Bob's, another member's, only after hers are in line.
        second = await alice.wait_for(lambda m: bool(m.get("status")) and m["status"]["prompt"] == "second")
        await bob.command("/imagine third steps: 5")
        third = await bob.wait_for(
            lambda m: (
                bool(m.get("status"))
                and m["status"]["prompt"] == "third"
                and m["status"]["headline"].startswith("Queued · #2 in line")
            )
        )

        # Bob may not cancel Alice's job; Alice may.
        await bob.action(second["id"], "cancel")
        refusal = await bob.wait_for(lambda m: m.get("ephemeral_to") == "bob")
        assert refusal["text"].startswith("Not allowed")
        assert (await rt.store.get(second["status"]["job"])).state is State.QUEUED  # type: ignore[union-attr]

        await alice.command(f"/cancel {second['status']['job']}")
        await alice.wait_for(lambda m: m["id"] == second["id"] and m["status"]["state"] == "cancelled")
        moved = await bob.wait_for(
            lambda m: (
                m["id"] == third["id"]
                and m["status"]["headline"].startswith(("Queued · #1", "Generating", "Done"))
            )
        )
        assert moved
        assert await rt.queue.position(second["status"]["job"], line="demo") is None
        done = await bob.wait_for(lambda m: m["id"] == third["id"] and m["status"]["state"] == "succeeded")
        assert done["status"]["image_url"]
        cancelled = await rt.store.get(second["status"]["job"])
        assert cancelled is not None and cancelled.state is State.CANCELLED
        assert cancelled.result_key is None, "a cancelled job never ran"
        await alice.close()
        await bob.close()


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("/imagine", "The prompt is missing"),
        ("/imagine    ", "The prompt is missing"),
        ("/imagine " + "x" * 5000, "The prompt is 5000 characters long; the limit is 1000."),
        ("/imagine a fox colour: red", None),  # not an option name: part of the prompt
        ("/imagine style: oil a fox", "/imagine has no option 'style'"),
        ("/imagine a fox size: 100x100", "Size must be one of: 512x512"),
        ("/imagine a fox steps: 0", "Steps must be a whole number from 1 to 50."),
        ("/imagine a fox steps: many", "Steps must be a whole number from 1 to 50."),
        ("/imagine a fox seed: -1", "Seed must be a whole number from 0 to 4294967295."),
        ("/paint a fox", "There is no command /paint."),
    ],
)
async def test_bad_input_is_refused_and_changes_nothing(
    rt: Runtime, http: aiohttp.ClientSession, redis: Redis, text: str, says: str | None
) -> None:
    async with bot_running(rt) as (base, _stop):
        alice, bob = ChatClient(http, base, "alice"), ChatClient(http, base, "bob")
        await alice.connect()
        await bob.connect()
        assert (await alice.command(text)) == {"ok": True}
        if says is None:
            await alice.wait_for(lambda m: bool(m.get("status")))
            return
        reply = await alice.wait_for(lambda m: m.get("ephemeral_to") == "alice")
        assert says in reply["text"]
        assert "Traceback" not in reply["text"]
        assert await GenerationRow.all().count() == 0
        assert await redis.zcard(rt.queue.keys.waiting("demo")) == 0
        assert await redis.zcard(rt.queue.line_queue("demo")) == 0
        assert [m for m in await bob.history() if m.get("ephemeral_to")] == [], "only Alice sees it"
        await alice.close()
        await bob.close()


async def test_unknown_option_in_the_structured_api_is_refused(
    rt: Runtime, http: aiohttp.ClientSession
) -> None:
    async with bot_running(rt) as (base, _stop):
        alice = ChatClient(http, base, "alice")
        await alice.connect()
        await alice.structured("imagine", {"prompt": "a fox", "sampler": "euler"})
        reply = await alice.wait_for(lambda m: m.get("ephemeral_to") == "alice")
        assert "has no option 'sampler'" in reply["text"]
        assert await GenerationRow.all().count() == 0
        await alice.close()


async def test_mentions_and_html_are_kept_as_plain_text(rt: Runtime, http: aiohttp.ClientSession) -> None:
    prompt = "@everyone <b>bold</b> <script>alert(1)</script> & more"
    async with bot_running(rt) as (base, _stop):
        alice = ChatClient(http, base, "alice")
        await alice.connect()
        await alice.command(f"/imagine {prompt}")
        card = await alice.wait_for(lambda m: bool(m.get("status")))
        assert card["status"]["prompt"] == prompt  # text, for the page to show with textContent
        async with http.get(base + "/") as resp:
            page = await resp.text()
        assert "innerHTML" not in page
        await alice.close()


async def test_unknown_members_and_bad_bodies_get_400(rt: Runtime, http: aiohttp.ClientSession) -> None:
    async with bot_running(rt) as (base, _stop):
        async with http.post(
            base + "/api/command", json={"user_id": "mallory", "text": "/imagine x"}
        ) as resp:
            assert resp.status == 400
        async with http.post(
            base + "/api/command", data=b"not json", headers={"Content-Type": "application/json"}
        ) as resp:
            assert resp.status == 400
        async with http.post(base + "/api/command", data=b"not json") as resp:
            assert resp.status == 415  # not sent as JSON
        async with http.get(base + "/blobs/../../etc/passwd") as resp:
            assert resp.status == 404
    assert await GenerationRow.all().count() == 0


async def test_a_worker_shutting_down_puts_its_job_back_at_the_front(
    settings: Settings, redis: Redis, http: aiohttp.ClientSession
) -> None:
    slow = settings.model_copy(
        update={"backend": settings.backend.model_copy(update={"demo_step_delay_s": 0.05})}
    )
    async with runtime(slow) as rt, bot_running(rt) as (base, _stop):
        alice = ChatClient(http, base, "alice")
        await alice.connect()
        async with worker_running(rt):
            await alice.command("/imagine interrupted steps: 100")
            await alice.command("/imagine behind steps: 2")
            running = await alice.wait_for(
                lambda m: bool(m.get("status")) and m["status"]["state"] == "running"
            )
        job = running["status"]["job"]
        back = await alice.wait_for(
            lambda m: (
                m["id"] == running["id"] and m["status"]["state"] == "queued" and bool(m["status"]["note"])
            )
        )
        assert back["status"]["headline"].startswith("Queued · #1 in line")
        gen = await rt.store.get(job)
        assert gen is not None and gen.state is State.QUEUED and gen.attempts == 1
        assert await rt.queue.position(job, line="demo") == 1

        async with worker_running(rt):
            done = await alice.wait_for(
                lambda m: m["id"] == running["id"] and m["status"]["state"] == "succeeded", timeout=30
            )
        assert done["status"]["image_url"]
        await alice.close()


async def test_the_reroll_button_on_a_finished_job_queues_the_same_prompt_again(
    rt: Runtime, http: aiohttp.ClientSession
) -> None:
    async with stack_running(rt) as base:
        alice, bob = ChatClient(http, base, "alice"), ChatClient(http, base, "bob")
        await alice.connect()
        await bob.connect()
        await alice.command("/imagine a lighthouse steps: 2")
        done = await alice.wait_for(lambda m: bool(m.get("status")) and m["status"]["state"] == "succeeded")
        assert [b["action"] for b in done["status"]["buttons"]] == ["reroll"]

        await bob.action(done["id"], "reroll")
        refusal = await bob.wait_for(lambda m: m.get("ephemeral_to") == "bob")
        assert refusal["text"].startswith("Not allowed")

        await alice.action(done["id"], "reroll")
        again = await alice.wait_for(
            lambda m: bool(m.get("status")) and m["id"] != done["id"] and m["status"]["state"] == "succeeded"
        )
        assert again["status"]["prompt"] == "a lighthouse"
        assert again["status"]["job"] != done["status"]["job"]
        await alice.close()
        await bob.close()
