"""Blocked-term normalisation and matching, and the admin commands' option values. Pure."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.moderation import blocked_term, first_match, format_span, member_of, normalize, parse_duration


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("Red FOX", "red fox"),
        ("café crème", "cafe creme"),
        ("\uff26\uff4f\uff58", "fox"),  # full-width
        ("\U0001d41f\U0001d428\U0001d431", "fox"),  # mathematical bold
        ("STRASSE Straße", "strasse strasse"),
        ("\u0441\u043e\u043e\u0440", "coop"),  # Cyrillic es, o, o, er
        ("h\u200bi\u200dd\u00adden", "hidden".replace("l", "i")),  # zero-width and soft hyphens vanish
        ("fox!!! , dog?", "fox dog"),
        ("sh!t $tuff @ss", "shit stuff ass"),
        ("k1ll KILL kiII", "kiii kiii kiii"),
        ("", ""),
    ],
)
def test_normalize(text: str, normal: str) -> None:
    assert normalize(text) == normal


SPAM = blocked_term("spam")
ASS = blocked_term("ass")
KILL = blocked_term("kill", whole_word=False)
RED_FOX = blocked_term("red fox")


@pytest.mark.parametrize(
    "prompt",
    [
        "spam",
        "SPAM please",
        "lots of Spam!",
        "\uff53\uff50\uff41\uff4d",
        "\u0455\u0440\u0430m",  # Cyrillic dze, er, a
        "5p4m",
        "spàm",
        "s\u200bpam",
    ],
)
def test_a_whole_word_term_matches_through_case_accents_and_look_alikes(prompt: str) -> None:
    assert first_match(prompt, [SPAM]) is SPAM


@pytest.mark.parametrize("prompt", ["a class act", "an assistant", "passage", "bass guitar", "spammer"])
def test_a_whole_word_term_does_not_match_inside_innocent_words(prompt: str) -> None:
    assert first_match(prompt, [ASS, SPAM]) is None


@pytest.mark.parametrize("prompt", ["killer whale", "skill", "K.I.L.L", "k i l l", "overkill"])
def test_a_substring_term_matches_anywhere_even_spaced_out(prompt: str) -> None:
    assert first_match(prompt, [KILL]) is KILL


def test_phrases_match_as_phrases() -> None:
    assert first_match("a RED  fox in snow", [RED_FOX]) is RED_FOX
    assert first_match("a red box with a fox", [RED_FOX]) is None


def test_the_first_matching_term_is_returned_and_empty_terms_never_match() -> None:
    empty = blocked_term("!!!")
    assert empty.normalized == ""
    assert first_match("anything", [empty]) is None
    assert first_match("spam and ass", [ASS, SPAM]) is ASS


@pytest.mark.parametrize(
    ("raw", "user"),
    [
        ("<@123>", "123"),
        ("<@!123>", "123"),
        ("<@U0AB|ana>", "U0AB"),
        ("@bob", "bob"),
        (" U9 ", "U9"),
        ("", None),
    ],
)
def test_member_of(raw: str, user: str | None) -> None:
    assert member_of(raw) == user


@pytest.mark.parametrize(
    ("raw", "span"),
    [
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("7d", timedelta(days=7)),
        ("1w", timedelta(weeks=1)),
        ("1d 12h", timedelta(days=1, hours=12)),
        ("90 minutes", timedelta(minutes=90)),
        ("2 days", timedelta(days=2)),
        ("", None),
        ("soon", None),
        ("5", None),
        ("0m", None),
        ("2h then some", None),
    ],
)
def test_parse_duration(raw: str, span: timedelta | None) -> None:
    assert parse_duration(raw) == span


def test_format_span() -> None:
    assert format_span(timedelta(hours=2)) == "2 h"
    assert format_span(timedelta(days=7)) == "7 d"
    assert format_span(timedelta(minutes=90)) == "90 min"
