"""The local chat API's request bodies, strictly typed (docs/local-chat.md, "Typing rules"). Pure.

A body is a JSON object in UTF-8. A string field is a JSON string: ``null``, numbers, booleans,
arrays and objects are refused, never turned into text. An integer option is a JSON integer (not a
boolean, not a float) or a string, which the core then reads as ASCII digits only. A message id is
an integer from 1 to 2**63 - 1, as a JSON integer or a string of ASCII digits. Anything else raises
:class:`BadRequest` with the one sentence the API answers (HTTP 400).
"""

from __future__ import annotations

import json
import re
from typing import Any

from bot.commands import CommandSpec
from bot.text import clean_line

#: The largest row id the databases keep (a signed 64-bit integer).
ID_MAX = 2**63 - 1
#: A command name longer than any command's is refused before it reaches the core.
COMMAND_MAX = 64


class BadRequest(Exception):
    """The request breaks the API's typing rules; ``sentence`` says how, for the client."""

    def __init__(self, sentence: str) -> None:
        super().__init__(sentence)
        self.sentence = sentence


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_object(raw: bytes) -> dict[str, Any]:
    """``raw`` as a JSON object. Invalid UTF-8, invalid JSON (``NaN`` and ``Infinity`` included),
    nesting too deep for the parser, and any other top-level value raise :class:`BadRequest`."""
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise BadRequest("Send a JSON object.")
    return body


def string_field(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    """The JSON string ``body[name]``; None when it is absent and not ``required``."""
    if name not in body and not required:
        return None
    value = body.get(name)
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a JSON string.")
    return value


def command_name(body: dict[str, Any]) -> str:
    """The structured form's ``command``: a JSON string of at most :data:`COMMAND_MAX`
    characters, read as one clean line like the text form (the core answers an unknown one)."""
    name = string_field(body, "command")
    assert name is not None
    if len(name) > COMMAND_MAX:
        raise BadRequest("There is no such command.")
    return clean_line(name)


def command_options(body: dict[str, Any], spec: CommandSpec | None) -> dict[str, str]:
    """The structured form's ``options`` (absent: none) as the core's raw strings. A value is a
    JSON string; for an integer option of ``spec`` a JSON integer is taken too, for a number one
    any JSON number, for a boolean one ``true``/``false`` (the core checks ranges). An option
    ``spec`` does not have must still be a string; the core names it."""
    raw = body.get("options", {})
    if not isinstance(raw, dict):
        raise BadRequest("options must be a JSON object.")
    options: dict[str, str] = {}
    for name, value in raw.items():
        option = spec.option(name) if spec is not None else None
        if isinstance(value, str):
            options[name] = value
        elif option is not None and option.type == "integer" and type(value) is int:
            options[name] = str(value)
        elif option is not None and option.type == "number" and type(value) in (int, float):
            options[name] = repr(float(value))
        elif option is not None and option.type == "boolean" and type(value) is bool:
            options[name] = "true" if value else "false"
        elif option is not None and option.type == "integer":
            raise BadRequest(f"The option {name} must be a whole number: a JSON integer or a string.")
        else:
            raise BadRequest("Option values must be JSON strings.")
    return options


def file_keys(body: dict[str, Any], key: re.Pattern[str], most: int) -> list[str]:
    """The ``files`` a command carries (absent: none): a JSON list of at most ``most`` upload
    keys, each matching ``key``."""
    raw = body.get("files", [])
    if not isinstance(raw, list) or len(raw) > most:
        raise BadRequest(f"files must be a JSON list of at most {most} upload keys.")
    if not all(isinstance(k, str) and key.fullmatch(k) for k in raw):
        raise BadRequest("files must hold the keys /api/uploads answered.")
    return list(raw)


def message_id(body: dict[str, Any]) -> int:
    """The ``message_id`` of a button press: 1 to :data:`ID_MAX`, a JSON integer (not a
    boolean) or a string of ASCII digits."""
    value = body.get("message_id")
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)
    if type(value) is not int or not 1 <= value <= ID_MAX:
        raise BadRequest("message_id must be a message number.")
    return value
