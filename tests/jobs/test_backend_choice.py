"""Several backends at once, through the whole stack on the local chat: the demo (the default) and
AUTOMATIC1111 (a fake of its API). A member chooses per job (``/imagine backend:``), a workspace's
admins choose for all its jobs (``/admin backend``), and each backend is a line of its own: a job
of one waits behind none of the other's, even while that service hangs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from bot.api import Call, Invalid
from bot.app import runtime
from bot.config import load_settings
from bot.embedded_redis import EmbeddedRedis
from bot.models import Actor
from jobs.imagine import plugin as imagine_plugin
from storage.models import GenerationRow
from tests.chat_client import ChatClient
from tests.conftest import make_settings
from tests.jobs.backend_chat import ended
from tests.jobs.fake_a1111 import FakeA1111
from tests.stack import stack_running


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeA1111]:
    service = FakeA1111(step_delay_s=0.01)
    await service.start()
    yield service
    service.hang = False
    await service.stop()


def status_line(prompt: str) -> Any:
    def found(message: dict[str, Any]) -> bool:
        return bool(message.get("status")) and message["status"]["prompt"] == prompt

    return found


def finished(prompt: str) -> Any:
    return lambda m: status_line(prompt)(m) and ended(m)


async def test_members_and_admins_choose_the_backend_and_each_has_its_own_line(
    redis_server: EmbeddedRedis,
    redis: Redis,
    sqlite_url: str,
    tmp_path: Path,
    fake: FakeA1111,
) -> None:
    settings = make_settings(
        redis_server.url,
        sqlite_url,
        tmp_path,
        backend={"name": "demo", "choices": ["a1111"]},
        backends={"a1111": {"url": fake.url, "poll_interval_s": 0.02}},
    )
    async with runtime(settings) as rt, stack_running(rt) as base, aiohttp.ClientSession() as http:
        alice, admin = ChatClient(http, base, "alice"), ChatClient(http, base, "admin")
        await alice.connect()
        await admin.connect()

        assert await alice.command("/imagine a plain fox") == {"ok": True}
        plain = (await alice.wait_for(finished("a plain fox"), timeout=30))["status"]
        assert await alice.command("/imagine a chosen fox backend: a1111") == {"ok": True}
        chosen = (await alice.wait_for(finished("a chosen fox"), timeout=30))["status"]
        assert len(fake.called("/sdapi/v1/txt2img")) == 1, "only the job that chose it"

        assert await admin.command("/admin backend") == {"ok": True}
        shown = await admin.wait_for(lambda m: "Jobs here run on" in (m.get("text") or ""))
        assert await admin.command("/admin backend name: a1111") == {"ok": True}
        await admin.wait_for(lambda m: "New jobs here now run on a1111" in (m.get("text") or ""))
        assert await alice.command("/imagine a workspace fox") == {"ok": True}
        await alice.wait_for(finished("a workspace fox"), timeout=30)
        assert len(fake.called("/sdapi/v1/txt2img")) == 2, "the workspace's choice"

        # AUTOMATIC1111 hangs: one job of its line runs, one waits first in that line. A demo
        # job is first in its own line and is drawn meanwhile.
        fake.hang = True
        assert await alice.command("/imagine a stuck fox") == {"ok": True}
        await alice.wait_for(lambda m: status_line("a stuck fox")(m) and m["status"]["state"] == "running")
        assert await alice.command("/imagine a waiting fox") == {"ok": True}
        waiting = await alice.wait_for(
            lambda m: status_line("a waiting fox")(m) and "#1 in line" in m["status"]["headline"]
        )
        assert await alice.command("/imagine a demo fox backend: demo") == {"ok": True}
        demo = (await alice.wait_for(finished("a demo fox"), timeout=30))["status"]
        assert await admin.command("/admin queue") == {"ok": True}
        queue = await admin.wait_for(lambda m: "The queue" in (m.get("text") or ""))
        assert await alice.command("/cancel") == {"ok": True}
        await alice.wait_for(finished("a waiting fox"), timeout=30)
        assert await admin.command("/admin backend name: default") == {"ok": True}
        await admin.wait_for(lambda m: "New jobs here now run on demo (the default)" in (m.get("text") or ""))
        await alice.close()
        await admin.close()
        backends = dict(await GenerationRow.all().values_list("prompt", "backend"))

    assert plain["state"] == chosen["state"] == demo["state"] == "succeeded"
    assert "on a1111" in chosen["details"] and "on demo" in plain["details"]
    assert "demo (the default)" in shown["text"] and "a1111" in shown["text"]
    assert waiting["status"]["state"] == "queued"
    assert "#1 for a1111" in queue["text"], queue["text"]
    assert backends == {
        "a plain fox": "demo",
        "a chosen fox": "a1111",
        "a workspace fox": "a1111",
        "a stuck fox": "a1111",
        "a waiting fox": "a1111",
        "a demo fox": "demo",
    }


def test_a_backend_that_lacks_an_option_given_refuses_it_plainly() -> None:
    settings = load_settings(
        _env_file=None,
        backend={"name": "demo", "choices": ["openai"]},
        backends={"openai": {"api_key": "sk-test"}},
    )
    (command,) = imagine_plugin(settings).commands
    assert command.prepare is not None
    assert [o.name for o in command.options] == ["prompt", "negative", "size", "steps", "seed", "backend"]
    actor = Actor("local", "local", "alice", "Alice")
    with pytest.raises(Invalid, match="The openai backend takes no steps or seed: leave them out"):
        command.prepare(Call(actor, "general", {"prompt": "a fox", "steps": 5, "seed": 1}, None, "openai"))
    job = command.prepare(Call(actor, "general", {"prompt": "a fox"}, None, "openai"))
    assert job.backend == "openai" and job.options["backend"] == "openai"
    job = command.prepare(
        Call(actor, "general", {"prompt": "a fox", "backend": "demo", "steps": 5}, None, "openai")
    )
    assert job.backend == "demo", "the member's choice wins over the workspace's"
