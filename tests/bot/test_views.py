"""Status views and the error catalogue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.errors import ErrorCode, describe
from bot.models import Generation, State
from bot.views import MOVED_BACK, build_view, format_duration, place, view_hash, wait_seconds, wait_words

NOW = datetime(2026, 1, 1, tzinfo=UTC)
#: How the image plugin's rows read (see ``jobs.imagine``).
LOOK = {"verb": "Generating", "details": "512x512 · 20 steps · seed 1 · demo backend", "reroll": True}


def gen(**changes: object) -> Generation:
    base: dict[str, object] = dict(
        id=7,
        platform="local",
        workspace="local",
        channel="general",
        user_id="alice",
        user_name="Alice",
        prompt="a red fox",
        backend="demo",
        options={"width": 512, "height": 512, "steps": 20, "seed": 1},
        state=State.QUEUED,
        error_code=None,
        attempts=0,
        ticket=3,
        result_key=None,
        message={},
        meta={"look": LOOK},
        version=1,
        created_at=NOW,
    )
    base.update(changes)
    return Generation(**base)  # type: ignore[arg-type]


def test_queued_headline_has_position_and_wait() -> None:
    view = build_view(gen(), 3, wait_seconds(3, 16.0, 1))
    assert view.title == "Queued · #3 in line · about 40 s"
    assert view.headline == "Queued · #3 in line" and view.wait == "about 40 s"
    assert [b.action for b in view.buttons] == ["cancel"]


def test_queued_without_live_workers_says_so() -> None:
    assert build_view(gen(), 2, None).title == "Queued · #2 in line · waiting for a worker"


def test_wait_counts_the_jobs_ahead_and_half_the_running_one() -> None:
    assert wait_seconds(1, 10.0, 1) == 5.0
    assert wait_seconds(4, 10.0, 2) == 17.5
    assert wait_seconds(4, 10.0, 0) == 35.0


def test_places_are_exact_at_the_head_then_1_2_5_bands() -> None:
    assert [place(p, 10) for p in (1, 10)] == [(1, 1), (10, 10)]
    assert [place(p, 10) for p in (11, 20, 21, 50, 51, 100, 101, 500, 501, 1000, 1001)] == [
        (11, 20), (11, 20), (21, 50), (21, 50), (51, 100), (51, 100),
        (101, 200), (201, 500), (501, 1000), (501, 1000), (1001, 2000),
    ]  # fmt: skip
    assert place(26, 25) == (26, 50)
    bands = {place(p, 10) for p in range(1, 1001)}
    assert len(bands) == 10 + 6, "a job at #1000 crosses 16 places on its way to the head"


def test_far_places_show_a_band_and_a_wait_range() -> None:
    view = build_view(gen(), 640, wait_seconds(640, 3.0, 2))
    assert view.title == "Queued · #501-1000 in line · 13-19 min"


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(3, "about 5 s"), (41, "about 45 s"), (100, "about 1 min 40 s"), (170, "about 2 min 50 s"),
     (400, "5-8 min"), (5400, "1-2 h")],
)  # fmt: skip
def test_waits_read_plainly_and_widen_with_distance(seconds: float, words: str) -> None:
    assert wait_words(seconds) == words


def test_a_place_further_back_than_shown_says_why() -> None:
    assert build_view(gen(), 3, 40, shown_before=1).note == MOVED_BACK
    assert build_view(gen(), 3, 40, shown_before=3).note is None
    assert build_view(gen(), 2, 40, shown_before=3).note is None


def test_the_wait_alone_is_no_reason_to_edit() -> None:
    assert view_hash(build_view(gen(), 30, 400)) == view_hash(build_view(gen(), 40, 900))
    assert view_hash(build_view(gen(), 30, 400)) != view_hash(build_view(gen(), 60, 400))


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
            meta={"look": LOOK, "progress": {"step": 9, "total": 20}, "preview": {"key": "previews/7.jpg"}},
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
