"""Status views and the error catalogue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.errors import ErrorCode, describe
from bot.models import Generation, State
from bot.views import build_view, eta_seconds, format_duration, view_hash

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def gen(**changes: object) -> Generation:
    base: dict[str, object] = dict(
        id=7,
        platform="local",
        workspace="local",
        channel="general",
        user_id="alice",
        user_name="Alice",
        prompt="a red fox",
        negative="",
        backend="demo",
        options={"width": 512, "height": 512, "steps": 20, "seed": 1},
        state=State.QUEUED,
        error_code=None,
        attempts=0,
        ticket=3,
        result_key=None,
        message={},
        meta={},
        version=1,
        created_at=NOW,
    )
    base.update(changes)
    return Generation(**base)  # type: ignore[arg-type]


def test_queued_headline_has_position_and_eta() -> None:
    view = build_view(gen(), 3, eta_seconds(3, 13.0, 1))
    assert view.headline == "Queued · #3 in line · about 40 s"
    assert [b.action for b in view.buttons] == ["cancel"]


def test_queued_without_live_workers_says_so() -> None:
    assert build_view(gen(), 2, None).headline == "Queued · #2 in line · waiting for a worker"


def test_eta_divides_by_worker_capacity() -> None:
    assert eta_seconds(4, 10.0, 2) == 20.0
    assert eta_seconds(4, 10.0, 0) == 40.0


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(1, "5 s"), (41, "45 s"), (61, "2 min"), (3600, "1 h"), (3700, "1 h 2 min")],
)
def test_durations_are_rounded_for_people(seconds: float, words: str) -> None:
    assert format_duration(seconds) == words


def test_running_shows_percent_and_preview() -> None:
    view = build_view(
        gen(
            state=State.RUNNING,
            meta={"progress": {"step": 9, "total": 20}, "preview": {"key": "previews/7.jpg"}},
        ),
        None,
        None,
    )
    assert view.headline == "Generating · 45%"
    assert view.progress == pytest.approx(0.45)
    assert view.preview_key == "previews/7.jpg"


def test_succeeded_shows_the_image_and_offers_a_reroll() -> None:
    view = build_view(
        gen(
            state=State.SUCCEEDED,
            result_key="results/7.png",
            started_at=NOW,
            finished_at=NOW + timedelta(seconds=12),
        ),
        None,
        None,
    )
    assert view.headline == "Done · took 12 s"
    assert view.image_key == "results/7.png"
    assert [b.action for b in view.buttons] == ["reroll"]


def test_failures_read_from_the_catalogue() -> None:
    view = build_view(gen(state=State.TIMED_OUT, error_code="timed_out"), None, None)
    assert view.error is not None
    assert view.headline == view.error.title == "Took too long"
    assert "fewer steps" in view.error.todo


def test_view_hash_changes_only_with_what_is_shown() -> None:
    a = build_view(gen(), 3, 40)
    assert view_hash(a) == view_hash(build_view(gen(version=9), 3, 40))
    assert view_hash(a) != view_hash(build_view(gen(), 2, 40))


def test_every_code_has_words_and_unknown_codes_read_as_internal() -> None:
    for code in ErrorCode:
        text = describe(code)
        assert text.title and text.what.endswith(".") and text.todo.endswith(".")
    assert describe("no-such-code").code is ErrorCode.INTERNAL
    assert describe(None).code is ErrorCode.INTERNAL
