"""What the core does with a plugin's commands and jobs, whatever the plugin gives it: its options
typed and checked, its text and results cleaned and bounded, its refusals and failures said in one
sentence, bans and blocked terms applied to commands that queue nothing too."""

from __future__ import annotations

import math
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from bot.app import Runtime, build_runner, runtime
from bot.embedded_redis import EmbeddedRedis
from bot.errors import ErrorCode
from bot.models import Actor, CommandRequest, State
from bot.moderation import blocked_term
from storage.models import GenerationRow
from tests.bot.test_service import Recorder
from tests.conftest import make_settings
from tests.plugin_path import on_path

ALICE = Actor("local", "local", "alice", "Alice")

PLUGIN = """
import math
from bot.api import Call, Command, JobKind, JobRequest, JobStopped, Option, Plugin, TextResult

async def echo(job):
    if job.options.get("mode") == "stop":
        raise JobStopped()
    if job.options.get("mode") == "dirty":
        await job.progress(1, 2, text="half\\x00way\\ud800")
        return TextResult("done\\x00 " + "x" * 5000)
    return TextResult(f"{job.text}: {job.options}")

def prepare(call):
    if call.options.get("mode") == "nan":
        return JobRequest(call.options["text"], {"bad": math.nan})
    if call.options.get("mode") == "object":
        return JobRequest(call.options["text"], {"bad": object()})
    return JobRequest("line one\\nline\\x00 two " + call.options["text"], dict(call.options))

async def hello(call):
    return "" if call.options.get("text") == "nothing" else f"hello {call.options.get('who', 'you')}"

plugin = Plugin(
    name="probe",
    commands=(
        Command(
            "probe",
            "Probe the core",
            (
                Option("text", "string", "Any text", required=True),
                Option("mode", "string", "What to do", choices=("plain", "stop", "dirty", "nan", "object")),
                Option("n", "integer", "A whole number", min=-10, max=10),
                Option("x", "number", "A number", min=-1, max=1),
                Option("flag", "boolean", "Yes or no"),
                Option("who", "member", "A member"),
            ),
            job="probe",
            prepare=prepare,
        ),
        Command(
            "hello",
            "Say hello",
            (Option("text", "string", "Any text"), Option("who", "member", "A member")),
            run=hello,
            public=True,
        ),
    ),
    jobs=(JobKind("probe", echo, verb="Probing " + "very " * 30, details=lambda o: "d" * 1000),),
)
"""


@pytest.fixture
def probe_module(tmp_path: Path) -> Iterator[None]:
    (tmp_path / "plugin_probe.py").write_text(textwrap.dedent(PLUGIN))
    with on_path(tmp_path, "plugin_probe"):
        yield


@pytest_asyncio.fixture
async def prt(
    probe_module: None, redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path
) -> AsyncIterator[Runtime]:
    settings = make_settings(
        redis_server.url, sqlite_url, tmp_path, plugins={"modules": ["plugin_probe:plugin"]}
    )
    async with runtime(settings) as rt:
        await rt.core.check_tickets()
        yield rt


async def probe(rt: Runtime, name: str = "probe", **options: str) -> Recorder:
    out = Recorder()
    await rt.core.handle(CommandRequest(ALICE, "general", name, options), out)
    return out


async def test_options_arrive_typed(prt: Runtime) -> None:
    out = await probe(prt, text="hi", n="-7", x="1e-01", flag="Yes", who="<@U0123ABC|bob>")
    assert out.errors == [] and len(out.posted) == 1
    row = await GenerationRow.get(id=out.posted[0].job)
    assert row.options == {"text": "hi", "n": -7, "x": 0.1, "flag": True, "who": "U0123ABC"}
    assert math.isclose(row.options["x"], 0.1)


@pytest.mark.parametrize(
    ("options", "sentence"),
    [
        ({"text": "hi", "n": "-11"}, "N must be a whole number from -10 to 10."),
        ({"text": "hi", "n": "1.5"}, "N must be a whole number from -10 to 10."),
        ({"text": "hi", "x": "nan"}, "X must be a number from -1 to 1, like 1.5."),
        ({"text": "hi", "x": "2"}, "X must be a number from -1 to 1, like 1.5."),
        ({"text": "hi", "flag": "perhaps"}, "Flag is yes or no."),
        ({"text": "hi", "who": "@"}, "Say which member for who, for example @ana."),
        ({"text": "hi", "mode": "loud"}, "Mode must be one of: plain, stop, dirty, nan, object."),
        ({"mode": "plain"}, "The text is missing: any text."),
    ],
)
async def test_bad_options_are_refused_with_one_sentence_and_change_nothing(
    prt: Runtime, options: dict[str, str], sentence: str
) -> None:
    out = await probe(prt, **options)
    assert [e.what for e in out.errors] == [sentence] and out.posted == []
    assert await GenerationRow.all().count() == 0


@pytest.mark.parametrize("mode", ["nan", "object"])
async def test_options_a_plugin_cannot_store_are_an_internal_error_and_no_row(
    prt: Runtime, mode: str
) -> None:
    out = await probe(prt, text="hi", mode=mode)
    assert [e.code for e in out.errors] == [ErrorCode.INTERNAL] and out.posted == []
    assert await GenerationRow.all().count() == 0


async def test_plugin_text_is_stored_clean_and_bounded(prt: Runtime) -> None:
    out = await probe(prt, text="hi", mode="dirty")
    gen = await prt.store.get(out.posted[0].job)
    assert gen is not None
    assert gen.prompt == "line one line two hi", "one clean line"
    assert gen.look["verb"] == ("Probing " + "very " * 30)[:40] and len(gen.look["details"]) == 300
    assert await build_runner(prt).run(gen.id) == "succeeded"
    done = await prt.store.get(gen.id)
    assert done is not None and done.meta["text"].startswith("done xxx") and len(done.meta["text"]) == 2800


async def test_a_plugin_that_stops_its_own_job_fails_it(prt: Runtime) -> None:
    out = await probe(prt, text="hi", mode="stop")
    assert await build_runner(prt).run(out.posted[0].job) == "failed"
    row = await GenerationRow.get(id=out.posted[0].job)
    assert (row.state, row.error_code) == (State.FAILED.value, ErrorCode.BACKEND_ERROR.value)


async def test_a_public_answer_goes_to_the_channel_and_an_empty_one_is_an_internal_error(
    prt: Runtime,
) -> None:
    out = await probe(prt, "hello", who="<@U0123ABC>")
    assert out.said == ["hello U0123ABC"] and out.replies == [] and out.errors == []
    empty = await probe(prt, "hello", text="nothing")
    assert empty.said == [] and [e.code for e in empty.errors] == [ErrorCode.INTERNAL]


async def test_bans_and_blocked_terms_apply_to_commands_that_queue_nothing(prt: Runtime) -> None:
    await prt.moderation.add_term("local", "local", blocked_term("weasel"), "admin")
    blocked = await probe(prt, "hello", text="a weasel")
    assert [e.code for e in blocked.errors] == [ErrorCode.CONTENT_BLOCKED] and blocked.said == []
    admin = Actor("local", "local", "admin", "Admin", is_admin=True)
    ban = Recorder()
    await prt.core.handle(CommandRequest(admin, "general", "admin ban", {"member": "alice"}), ban)
    banned = await probe(prt, "hello")
    assert [e.code for e in banned.errors] == [ErrorCode.BANNED] and banned.said == []
