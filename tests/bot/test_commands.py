"""Parsing and validation of commands: pure functions, captured inputs."""

from __future__ import annotations

import pytest

from bot.api import Call
from bot.commands import parse_options, parse_text
from bot.config import LimitsSettings, load_settings
from bot.errors import ErrorCode, GenbotError
from bot.models import Actor
from jobs.backends.base import ImageRequest
from jobs.imagine import SEED_MAX, image_request
from jobs.imagine import plugin as imagine_plugin
from tests.image_jobs import every_spec

LIMITS = LimitsSettings()
SPECS = every_spec()
IMAGINE = imagine_plugin(load_settings(_env_file=None)).commands[0]
ALICE = Actor("local", "w", "alice", "Alice")


def validate_imagine(options: dict[str, str]) -> ImageRequest:
    """``/imagine``'s options as its plugin reads them: parsed by their types, then prepared."""
    spec = next(s for s in SPECS if s.key == "imagine")
    values = parse_options(spec, options, text_max=LIMITS.prompt_max)
    assert IMAGINE.prepare is not None
    job = IMAGINE.prepare(Call(ALICE, "general", values))
    return image_request(job.text, job.options)


def imagine(text: str) -> ImageRequest:
    _spec, options = parse_text(text, SPECS)
    return validate_imagine(options)


def refusal(text: str) -> str:
    with pytest.raises(GenbotError) as caught:
        imagine(text)
    assert caught.value.code is ErrorCode.INVALID_OPTION
    return caught.value.text.what


def test_bare_text_is_the_prompt_with_defaults() -> None:
    opts = imagine("/imagine   a red fox\n in   snow ")
    assert opts.prompt == "a red fox in snow"
    assert (opts.width, opts.height, opts.steps) == (512, 512, 20)
    assert 0 <= opts.seed <= SEED_MAX


def test_named_options() -> None:
    opts = imagine("/imagine prompt: a fox negative: blurry size: 768x512 steps: 7 seed: 42")
    assert (opts.prompt, opts.negative, opts.size, opts.steps, opts.seed) == (
        "a fox",
        "blurry",
        "768x512",
        7,
        42,
    )


def test_a_colon_inside_the_prompt_is_prompt_text() -> None:
    assert imagine("/imagine a photo: sunset over sea").prompt == "a photo: sunset over sea"


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        ("/imagine", "The prompt is missing: what to draw."),
        ("/imagine " + "é" * 1001, "The prompt is 1001 characters long; the limit is 1000."),
        ("/imagine x negative: " + "n" * 1001, "The negative is 1001 characters long; the limit is 1000."),
        ("/imagine x size: 513x512", "Size must be one of: 512x512, 768x768, 512x768, 768x512."),
        ("/imagine x steps: 51", "Steps must be a whole number from 1 to 50."),
        ("/imagine x steps: 1.5", "Steps must be a whole number from 1 to 50."),
        ("/imagine x seed: 4294967296", "Seed must be a whole number from 0 to 4294967295."),
        ("/imagine x steps: 2 steps: 3", "The option steps is given twice."),
        (
            "/imagine sampler: euler",
            "/imagine has no option 'sampler'. It takes: prompt, negative, size, steps, seed.",
        ),
        ("imagine x", "Commands start with /, for example /imagine a red fox in snow."),
        ("/draw x", "There is no command /draw. Commands: /imagine, /queue, /cancel, /status."),
    ],
)
def test_bad_input_gets_one_clear_sentence(text: str, sentence: str) -> None:
    assert refusal(text) == sentence


def test_exactly_the_limit_is_accepted() -> None:
    assert len(imagine("/imagine " + "a" * 1000).prompt) == 1000


def test_other_commands_parse_their_options() -> None:
    spec, options = parse_text("/cancel 12", SPECS)
    assert (spec.name, options) == ("cancel", {"job": "12"})
    spec, options = parse_text("/status job: 3", SPECS)
    assert (spec.name, options) == ("status", {"job": "3"})
    spec, options = parse_text("/queue", SPECS)
    assert (spec.name, options) == ("queue", {})


def test_admin_commands_parse_as_two_words() -> None:
    specs = SPECS
    spec, options = parse_text("/admin ban <@U1|ana> reason: spam duration: 2h", specs)
    assert spec.key == "admin ban" and spec.admin
    assert options == {"member": "<@U1|ana>", "reason": "spam", "duration": "2h"}
    spec, options = parse_text("/ADMIN Block red fox match: substring", specs)
    assert (spec.key, options) == ("admin block", {"term": "red fox", "match": "substring"})
    with pytest.raises(GenbotError, match="Say which /admin command: ban, unban"):
        parse_text("/admin", specs)
    with pytest.raises(GenbotError, match="/admin has no command 'frob'"):
        parse_text("/admin frob", specs)
    with pytest.raises(GenbotError, match="/admin stats takes no options"):
        parse_text("/admin stats now", specs)
    with pytest.raises(GenbotError, match="There is no command /ban"):
        parse_text("/ban ana", specs)  # admin commands only under /admin


@pytest.mark.parametrize(
    "number", ["\u0663", "\uff15", "1_000", "1e3", "0x10", "+5", "-0", "5.0", "²", "9" * 25, "1 000"]
)
@pytest.mark.parametrize(("option", "sentence"), [("steps", "Steps must be a whole number from 1 to 50.")])
def test_numbers_are_ascii_digits_only(number: str, option: str, sentence: str) -> None:
    assert refusal(f"/imagine x {option}: {number}") == sentence


def test_ascii_digits_are_numbers() -> None:
    assert imagine("/imagine x steps: 007 seed: 4294967295").steps == 7


@pytest.mark.parametrize(
    ("text", "prompt"),
    [
        ("/imagine a\x00 fox\x1b[0m", "a fox[0m"),
        ("/imagine café\u200b 👩\u200d👩\u200d👧", "café\u200b 👩\u200d👩\u200d👧"),
        ("/imagine lone \ud800 surrogate", "lone surrogate"),
        ("/imagine\nmulti\r\nline\tprompt", "multi line prompt"),
    ],
)
def test_prompts_are_cleaned(text: str, prompt: str) -> None:
    assert imagine(text).prompt == prompt


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        ("/imagine \u200b\u200b", "The prompt has no visible character"),
        ("/imagine \U000e0041\U000e0042", "The prompt has no visible character"),
        ("/imagine \u3164", "The prompt has no visible character"),
        ("/imagine \x00\x01", "The prompt is missing"),
        ("/imagine fox negative: \u200d", "The negative has no visible character"),
    ],
)
def test_invisible_prompts_are_refused(text: str, sentence: str) -> None:
    assert refusal(text).startswith(sentence)


def test_an_unknown_command_is_echoed_short_and_clean() -> None:
    what = refusal("/" + "x\x00" * 50_000)
    assert what.startswith("There is no command /" + "x" * 31 + "…. Commands:")
    assert "\x00" not in what and len(what) < 120


def test_pydantic_never_speaks_to_members() -> None:
    for bad in ({"prompt": 12}, {"prompt": None}, {"prompt": "fox", "size": ["512x512"]}):
        with pytest.raises(GenbotError) as caught:
            validate_imagine(bad)  # type: ignore[arg-type]
        what = caught.value.text.what
        assert what.startswith("The ") and what.endswith("option is not valid: give it as text.")
        assert "Input should" not in what and "pydantic" not in what
