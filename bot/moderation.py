"""Moderation that needs no I/O: normalising blocked terms and prompts, matching them, and reading
the admin commands' ``member`` and ``duration`` options. Pure, so every rule is tested directly.

How a prompt is matched against a blocked term
----------------------------------------------
Both go through :func:`normalize`, and the comparison happens on the results:

1. Unicode compatibility forms fold to their plain letters (NFKC: full-width letters, ligatures,
   mathematical bold and italic letters).
2. Case folds (``casefold``: ``Straße`` -> ``strasse``).
3. Accents go: the text is decomposed (NFKD) and combining marks are dropped (``café`` -> ``cafe``).
4. Common look-alikes become the letter they imitate: Cyrillic and Greek letters drawn like Latin
   ones (Cyrillic a, U+0430, -> ``a``), and the digits and signs of "leet" spelling (``0`` -> ``o``,
   ``1`` -> ``i``, ``3`` -> ``e``, ``4`` -> ``a``, ``5`` -> ``s``, ``7`` -> ``t``; inside a word
   also ``!``/``|`` -> ``i``, ``@`` -> ``a``, ``$`` -> ``s``, ``+`` -> ``t``, while a trailing ``!``
   stays punctuation). ``l`` reads as ``i`` too, since ``1``, ``l`` and ``I`` are drawn alike:
   ``k1ll``, ``kiII`` and ``kill`` are one word.
5. Zero-width and other invisible format characters are dropped; runs of anything that is not a
   letter or digit become one space.

A **whole-word** term matches when it stands between word boundaries of the normalised prompt
(``ass`` blocks ``ass`` but not ``class`` or ``assistant``); a **substring** term matches anywhere.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

# ruff: noqa: RUF001  (the look-alike table is made of ambiguous letters on purpose)
# Look-alikes that NFKC does not fold: Cyrillic and Greek letters drawn like Latin ones, and leet.
_LOOKALIKES = str.maketrans(
    {
        # Cyrillic
        "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p",
        "с": "c", "т": "t", "у": "y", "х": "x", "і": "i", "ї": "i", "ј": "j", "ѕ": "s", "ԁ": "d",
        "ԛ": "q", "ԝ": "w", "ь": "b",
        # Greek (after casefold)
        "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
        "τ": "t", "υ": "u", "χ": "x", "ω": "w", "ς": "s", "σ": "o",
        # leet digits, and l (drawn like 1 and I)
        "0": "o", "1": "i", "l": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g",
    }
)  # fmt: skip
# Signs read as letters only inside a word (``sh!t``, ``$hit``), not as punctuation (``fox!``).
_SIGNS = {"!": "i", "|": "i", "@": "a", "$": "s", "+": "t"}
_SIGN_IN_WORD = re.compile(r"[!|@$+](?=\w)")
_NOT_WORD = re.compile(r"[\W_]+")


def normalize(text: str) -> str:
    """The form blocked terms and prompts are compared in (see the module docstring)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    decomposed = unicodedata.normalize("NFKD", folded)
    kept = "".join(
        ch for ch in decomposed if not unicodedata.combining(ch) and unicodedata.category(ch) != "Cf"
    )
    spelled = _SIGN_IN_WORD.sub(lambda m: _SIGNS[m.group()], kept)
    return " ".join(_NOT_WORD.sub(" ", spelled.translate(_LOOKALIKES)).split())


@dataclass(frozen=True, slots=True)
class BlockedTerm:
    term: str  # as the admin typed it
    normalized: str
    whole_word: bool = True


def blocked_term(term: str, *, whole_word: bool = True) -> BlockedTerm:
    return BlockedTerm(term=term.strip(), normalized=normalize(term), whole_word=whole_word)


class TermMatcher:
    """A workspace's blocked terms, compiled once: the whole-word terms into one regular
    expression, the substring terms into two lists (as written, and without spaces)."""

    def __init__(self, terms: Iterable[BlockedTerm]) -> None:
        self.terms = [t for t in terms if t.normalized]
        words = [t for t in self.terms if t.whole_word]
        self._by_word = {t.normalized: t for t in reversed(words)}  # the first term wins
        self._words = (
            re.compile(r"(?<!\w)(?:" + "|".join(re.escape(t.normalized) for t in words) + r")(?!\w)")
            if words
            else None
        )
        self._subs = [
            (t, t.normalized, t.normalized.replace(" ", "")) for t in self.terms if not t.whole_word
        ]

    def first(self, text: str) -> BlockedTerm | None:
        """The first of the terms (in their order) that ``text`` contains, or None."""
        normalized = normalize(text)
        if not normalized or not self.terms:
            return None
        hits: list[BlockedTerm] = []
        if self._words is not None:
            hits += [self._by_word[m.group()] for m in self._words.finditer(normalized)]
        squeezed = normalized.replace(" ", "")
        # a substring term also matches when spaces or dots are slipped between its letters
        hits += [t for t, term, tight in self._subs if term in normalized or tight in squeezed]
        return min(hits, key=self.terms.index) if hits else None


def first_match(text: str, terms: Iterable[BlockedTerm]) -> BlockedTerm | None:
    """The first of ``terms`` that ``text`` contains, or None. (Compiles them each time: keep a
    :class:`TermMatcher` for repeated use.)"""
    return TermMatcher(terms).first(text)


# -- option values --------------------------------------------------------------------------------

_MENTION = re.compile(r"^<@!?([A-Za-z0-9]+)(?:\|[^>]*)?>$")
#: ASCII digits only (``\d`` would take ``٣`` too), and few enough that the number stays small.
_DURATION = re.compile(r"([0-9]{1,7})\s*(weeks?|w|days?|d|hours?|h|minutes?|mins?|m)", re.IGNORECASE)
_UNIT_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60}
#: The longest duration a ban may be given (ten years; longer: leave it out, until unbanned).
MAX_DURATION_S = 3650 * 86400


def member_of(raw: str) -> str | None:
    """A member option as a user id: a Discord or Slack mention (``<@123>``, ``<@!123>``,
    ``<@U1|ana>``), ``@name`` or a bare id. None when it is empty."""
    text = raw.strip()
    if match := _MENTION.match(text):
        return match.group(1)
    text = text.removeprefix("@").strip()
    return text or None


def parse_duration(raw: str) -> timedelta | None:
    """``30m``, ``2h``, ``7d``, ``1w``, ``1d 12h``: a timedelta; None when the text is not one."""
    text = raw.strip().lower()
    if not text:
        return None
    total = 0
    position = 0
    for match in _DURATION.finditer(text):
        if text[position : match.start()].strip(" ,"):
            return None
        total += int(match.group(1)) * _UNIT_SECONDS[match.group(2)[0]]
        position = match.end()
    if position == 0 or text[position:].strip() or not 0 < total <= MAX_DURATION_S:
        return None
    return timedelta(seconds=total)


def format_span(span: timedelta) -> str:
    """``2 h``, ``30 min``, ``7 d``: a duration in the largest whole unit that fits."""
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size} {unit}"
    minutes = max(1, round(seconds / 60))
    return f"{minutes} min"
