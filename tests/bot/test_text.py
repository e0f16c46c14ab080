"""Member text: what cleaning removes, what it keeps, and what counts as visible. Pure."""

from __future__ import annotations

import json
import unicodedata

import pytest

from bot.text import (
    ECHO_MAX,
    NAME_MAX,
    clean_block,
    clean_line,
    clean_name,
    clip,
    is_visible,
    shown,
    storable,
)

# ruff: noqa: RUF001  (look-alike and invisible characters on purpose)

#: Legitimate text that must come out exactly as it went in.
KEPT = [
    "a red fox in snow",
    "👩‍👩‍👧‍👦 family",  # a ZWJ sequence
    "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f flag",  # Scotland: tag characters
    "🇫🇷 flag",  # regional indicators
    "café crème, naïve Zoë",
    "e\u0301 combining",  # e + combining acute
    "שלום עולם",  # Hebrew, right to left
    "مرحبا بالعالم",  # Arabic
    "abc \u200fمرحبا\u200e def",  # direction marks stay
    "東京の夜景",
    "❤️ with a variation selector",
    "@everyone <b>bold</b> & <!channel>",
]


@pytest.mark.parametrize("text", KEPT)
def test_legitimate_text_is_kept_as_typed(text: str) -> None:
    assert clean_line(text) == text
    assert clean_block(text) == text
    assert is_visible(text)


@pytest.mark.parametrize(
    ("raw", "line"),
    [
        ("a\x00fox", "afox"),  # NUL: PostgreSQL refuses it in text
        ("fox\x1b[31mred", "fox[31mred"),  # an escape sequence loses its ESC
        ("a\x7fb\x80c\x9fd", "abcd"),  # DEL and C1 controls
        ("a\tb\nc\r\nd\x0be\x0cf\x85g", "a b c d e f g"),  # whitespace controls become one space
        ("  many   spaces\u3000and\u00a0nbsp  ", "many spaces and nbsp"),
        ("line\u2028separator\u2029paragraph", "line separator paragraph"),
        ("lone \ud800 surrogate \udfff", "lone surrogate"),
        (json.loads('"high \\ud83d alone"'), "high alone"),
        ("\x00\x01\x02", ""),
    ],
)
def test_one_line_fields_lose_controls_and_surrogates(raw: str, line: str) -> None:
    assert clean_line(raw) == line
    assert clean_line(line) == line  # idempotent
    line.encode("utf-8")  # always encodable, so every database and API takes it


def test_a_json_surrogate_pair_is_one_character_and_kept() -> None:
    assert clean_line(json.loads('"\\ud83d\\ude00"')) == "😀"


def test_blocks_keep_their_lines() -> None:
    assert clean_block("  hello\r\nworld\rand\ttabs\x00!\n") == "hello\nworld\nand\ttabs!"
    assert clean_block("a\x0bb") == "a b"


def test_every_control_character_goes() -> None:
    controls = "".join(chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Cc")
    assert len(controls) == 65
    assert clean_line(f"a{controls}b") == "a b"  # the whitespace ones leave one space
    assert all(unicodedata.category(ch) != "Cc" for ch in clean_block(f"a{controls}b") if ch not in "\n\t")


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "\u200b\u200c\u200d",  # zero-width space and joiners
        "\ufeff\u2060\u2062",  # BOM, word joiner, invisible times
        "\U000e0041\U000e0042\U000e007f",  # tag characters alone
        "\u0301\u0308\u034f",  # combining marks alone
        "\ufe0f\U000e0100",  # variation selectors
        "\u3164\u3164",  # Hangul filler, a "letter" that draws nothing
        "\u115f\u1160\uffa0\u2800",
        "\u200e\u200f\u202e\u2066",  # direction marks and overrides
        "\u00ad",  # soft hyphen
    ],
)
def test_text_that_draws_nothing_is_not_visible(text: str) -> None:
    assert not is_visible(text)


@pytest.mark.parametrize("text", ["a", "٣", "５", "!", "€", "😀", "\u200bx\u200b", "ㄱ"])
def test_one_drawn_character_is_visible(text: str) -> None:
    assert is_visible(text)


def test_clip_cuts_at_a_line_when_it_can() -> None:
    assert clip("short", 10) == "short"
    assert clip("x" * 20, 10) == "x" * 9 + "…"
    listing = "\n".join(f"line {i}" for i in range(100))
    cut = clip(listing, 100)
    assert len(cut) <= 100 and cut.endswith("…")
    assert cut.rstrip("…").split("\n")[-1].startswith("line ")  # whole lines
    assert len(clip(listing, 100)) == len(cut)


def test_shown_bounds_and_cleans_an_echo() -> None:
    echo = shown("x\x00" * 50_000)
    assert len(echo) == ECHO_MAX and echo.endswith("…") and "\x00" not in echo
    assert shown("paint") == "paint"


def test_names_are_clean_bounded_and_never_empty() -> None:
    assert clean_name("Ana\x00 \n Smith", "U1") == "Ana Smith"
    assert len(clean_name("n" * 500, "U1")) == NAME_MAX
    assert clean_name("\u200b\u3164", "U1") == "U1"
    assert clean_name("", "U1") == "U1"


def test_a_payload_kept_as_it_came_is_fit_to_store() -> None:
    payload = {"text": "fox\x00 in\r\nsnow", "nested": [{"a\x00": "\ud800b"}], "n": 3, "none": None}
    assert storable(payload) == {"text": "fox in\nsnow", "nested": [{"a": "b"}], "n": 3, "none": None}
