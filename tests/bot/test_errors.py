"""The error catalogue is complete, and no exception text, traceback or internal id ever reaches
a member: neither through a status message nor through a command's reply."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from bot.app import Runtime
from bot.errors import ErrorCode, describe
from bot.models import Actor, CommandRequest, State
from bot.views import build_view
from jobs.backends.base import ImageRequest
from tests.bot.test_service import Recorder
from tests.image_jobs import image_job
from tests.jobs.test_runner import FakeBackend, runner_for

ROOT = Path(__file__).resolve().parents[2]
ALICE = Actor("local", "local", "alice", "Alice")
#: What must never reach a member: exception text, traceback lines, Redis keys, arq job ids.
LEAKS = re.compile(
    r"Traceback|File \"|Error\b|Exception|CUDA|0xdeadbeef|secret-detail|arq[:_]|gen:\d|genbot:|\bgt:|redis|None\b"
)


def test_every_code_of_the_design_is_in_the_catalogue() -> None:
    design = ROOT.parent / "shared" / "DESIGN.md"
    listed = [
        "backend_unavailable",
        "timed_out",
        "stuck",
        "worker_lost",
        "content_blocked",
        "queue_full",
        "rate_limited",
        "queue_paused",
        "invalid_option",
        "cancelled",
        "cancelled_by_admin",
        "banned",
    ]
    if design.exists():  # the design's own list, when the checkout has it next to it
        section = design.read_text().split("## Failures the user sees")[1].split("##")[0]
        listed = re.findall(r"`([a-z_]+)`", section)
        assert len(listed) >= 12
    for code in listed:
        assert code in {c.value for c in ErrorCode}, code


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_code_has_a_title_what_happened_and_what_to_do_in_plain_words(code: ErrorCode) -> None:
    text = describe(code)
    assert text.code is code
    for part in (text.title, text.what, text.todo):
        assert part and part.strip() == part
        assert not LEAKS.search(part), (code, part)
    assert text.what.endswith(".") and text.todo.endswith(".")


def test_an_unknown_code_reads_as_internal() -> None:
    assert describe("KeyError: 'gen:17'").code is ErrorCode.INTERNAL


def visible_text(view: object) -> str:
    return " ".join(str(v) for v in dataclasses.astuple(view) if v is not None)  # type: ignore[call-overload]


async def test_a_backend_exception_reaches_the_member_as_catalogue_words_only(rt: Runtime) -> None:
    class LeakyBackend(FakeBackend):
        async def generate(self, request, progress):  # type: ignore[no-untyped-def]
            raise RuntimeError('Traceback: File "x.py" CUDA error at 0xdeadbeef, secret-detail gen:1 arq:job')

    gen, _ = await rt.core.submit(
        image_job(ALICE, "general", ImageRequest("a fox", "", 64, 64, 3, 1), "fake")
    )
    assert await runner_for(rt, LeakyBackend()).run(gen.id) == "failed"
    row = await rt.store.get(gen.id)
    assert row is not None and row.state is State.FAILED
    view = build_view(row, None, None)
    assert view.error is not None and view.error.title == "Service error"
    text = visible_text(view) + " " + visible_text(view.error)
    assert not LEAKS.search(text.replace("'", "")), text


async def test_an_unexpected_failure_in_a_command_reaches_the_member_as_catalogue_words_only(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_args: object, **_kwargs: object) -> object:
        raise RuntimeError("secret-detail: connection to redis://10.0.0.1 lost, arq:queue gen:12")

    monkeypatch.setattr(rt.store, "create", broken)
    out = Recorder()
    await rt.core.handle(CommandRequest(ALICE, "general", "imagine", {"prompt": "a fox"}), out)
    [error] = out.errors
    assert error.code is ErrorCode.INTERNAL
    assert not LEAKS.search(f"{error.title} {error.what} {error.todo}")
    assert out.posted == [] and out.replies == []
