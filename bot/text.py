"""Member text: the one place that makes a string from a member or a platform payload fit to
store and to show. Pure.

Every text that enters the core or the database from outside goes through :func:`clean_line`
(one-line fields: prompts, option values, display names) or :func:`clean_block` (the local chat's
plain messages). What they remove can never be stored or shown as meant anyway:

- control characters (Unicode category ``Cc``: NUL, escape sequences, DEL, C1 controls).
  PostgreSQL refuses NUL in text, and the others draw nothing or rewrite a terminal;
- lone surrogates (a JSON ``"\\ud800"`` escape makes one): UTF-8 cannot encode them, so neither
  the database nor a platform's API can take them.

Everything else is kept as typed: emoji with zero-width joiners, flags spelled with tag
characters, accents and combining marks, right-to-left scripts and their direction marks.

:func:`is_visible` tells whether a text shows anything at all (a prompt that does not is refused);
:func:`shown` and :func:`clip` bound what the core echoes and replies.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

#: An echo of member input inside a sentence (an unknown command's name) shows at most this much.
ECHO_MAX = 32
#: The longest reply text the core sends: within Discord's 2,000 characters of message content,
#: with room for the platform's own escaping.
REPLY_MAX = 1800
#: The longest display name kept (the database keeps 100; the platforms allow 32 to 80).
NAME_MAX = 80

_SURROGATES = re.compile("[\ud800-\udfff]")
#: Every ``Cc`` character: the whitespace ones become a space (so ``a\\tb`` stays two words), the
#: others go.
_CONTROLS = {
    code: (" " if chr(code).isspace() else None) for code in (*range(0x00, 0x20), *range(0x7F, 0xA0))
}
#: In a multi-line text, line breaks and tabs are kept (``\\r\\n`` and ``\\r`` read as ``\\n``).
_BLOCK_CONTROLS = {**_CONTROLS, ord("\n"): "\n", ord("\t"): "\t"}
#: Letters by category that draw nothing: the Hangul fillers and the blank Braille pattern, the
#: usual stand-ins for an "empty" name or prompt.
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
#: Categories that draw something: letters, numbers, punctuation, symbols.
_VISIBLE = frozenset("LNPS")


def clean_line(text: str) -> str:
    """``text`` as one line: control characters and lone surrogates removed, every run of
    whitespace (line breaks and tabs included) one space, no space at either end.

    Idempotent, and it never makes a text longer."""
    text = _SURROGATES.sub("", text).translate(_CONTROLS)
    return " ".join(text.split())


def clean_block(text: str) -> str:
    """``text`` with its lines kept: as :func:`clean_line`, except that line breaks (``\\n``,
    ``\\r\\n``, ``\\r``) and tabs stay; whitespace at either end goes. Idempotent."""
    text = _SURROGATES.sub("", text).replace("\r\n", "\n").replace("\r", "\n")
    return text.translate(_BLOCK_CONTROLS).strip()


def storable(value: Any) -> Any:
    """A JSON value (a platform's payload, to keep as it came) with every string, keys included,
    :func:`clean_block`-ed: fit for the database, where it is parsed again later."""
    if isinstance(value, str):
        return clean_block(value)
    if isinstance(value, dict):
        return {clean_block(str(k)): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value


def is_visible(text: str) -> bool:
    """Whether ``text`` has at least one character that draws something: a letter, number,
    punctuation mark or symbol. Zero-width, tag, format, combining, space and blank filler
    characters alone draw nothing."""
    return any(unicodedata.category(ch)[0] in _VISIBLE and ch not in _BLANK_LETTERS for ch in text)


def clip(text: str, limit: int) -> str:
    """``text`` at most ``limit`` characters long: cut at the last line break that keeps at least
    half of it, else within the line, with "…" marking the cut."""
    if len(text) <= limit:
        return text
    head = text[: limit - 1]
    cut = head.rfind("\n")
    if cut >= limit // 2:
        head = head[:cut]
    return head.rstrip() + "…"


def shown(text: str, limit: int = ECHO_MAX) -> str:
    """Member input as the core quotes it back: one clean line of at most ``limit``
    characters."""
    return clip(clean_line(text), limit)


def clean_name(name: str, fallback: str) -> str:
    """A display name from a platform: one clean line of at most :data:`NAME_MAX` characters;
    ``fallback`` (the member's id) when nothing visible is left."""
    cleaned = clip(clean_line(name), NAME_MAX)
    return cleaned if is_visible(cleaned) else fallback
