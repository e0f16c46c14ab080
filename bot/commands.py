"""The slash commands: their options (the one spec every platform registers), the text syntax the
local chat and Slack use, and the parsing of option values by their types.

All of it is pure: no I/O, easy to test with captured inputs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any

from bot.errors import ErrorCode, GenbotError
from bot.models import CommandRequest
from bot.moderation import member_of
from bot.text import clean_line, clean_name, is_visible, shown

#: Job numbers are row ids; larger numbers are refused before they reach the database. (Discord's
#: integer options end at 2**53.)
JOB_MAX = 2**53 - 1
#: The longest member id the database keeps (Discord's snowflakes are 20 digits, Slack's ids 11).
MEMBER_MAX = 64


#: The option types every platform offers: text, whole numbers, numbers, yes/no, a member
#: (picked from the platform's list; the core reads their id), and a file: any ``attachment``,
#: or an ``image`` (see :mod:`bot.attachments`; the value an adapter gives is its reference to
#: the file, which the core fetches through the command's responder).
OPTION_TYPES = frozenset({"string", "integer", "number", "boolean", "member", "attachment", "image"})
#: The longest reference to a file an adapter gives (a Discord CDN link with its signature).
FILE_REF_MAX = 2000


@dataclass(frozen=True, slots=True)
class OptionSpec:
    """One option of a command. ``choices`` (for text) are the only values taken; ``min`` and
    ``max`` bound numbers. Options are given by name; the first required one may be given bare
    (``/imagine a red fox``)."""

    name: str
    type: str  # one of OPTION_TYPES
    description: str
    required: bool = False
    choices: tuple[str, ...] | None = None
    min: int | float | None = None
    max: int | float | None = None

    def __post_init__(self) -> None:
        if self.type not in OPTION_TYPES:
            raise ValueError(f"option {self.name!r}: type {self.type!r} is not one of {sorted(OPTION_TYPES)}")


@dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str
    description: str
    options: tuple[OptionSpec, ...] = ()
    #: ``"admin"`` for the admin commands: ``/admin ban ...`` (Discord: subcommands of ``/admin``).
    group: str | None = None
    #: Whether its answer is for the whole channel (a job's status message), not the member alone.
    public: bool = False

    def option(self, name: str) -> OptionSpec | None:
        return next((o for o in self.options if o.name == name), None)

    @property
    def key(self) -> str:
        """The command as typed after the slash: ``imagine``, ``admin ban``."""
        return f"{self.group} {self.name}" if self.group else self.name

    @property
    def admin(self) -> bool:
        return self.group == ADMIN


ADMIN = "admin"
_REASON = OptionSpec("reason", "string", "Why (kept in the audit log)")


def command_specs() -> tuple[CommandSpec, ...]:
    """genbot's own member commands, for the jobs of every plugin. (The commands that start jobs,
    ``/imagine`` among them, are the plugins'.)"""
    return (
        CommandSpec("queue", "Your jobs and where they stand in the queue"),
        CommandSpec(
            "cancel",
            "Cancel one of your jobs (your newest if no job is given)",
            (OptionSpec("job", "integer", "The job number", min=1, max=JOB_MAX),),
        ),
        CommandSpec(
            "status",
            "Post a job's status message again",
            (OptionSpec("job", "integer", "The job number", required=True, min=1, max=JOB_MAX),),
            public=True,
        ),
    )


#: The most choices an option may offer (Discord's limit).
CHOICES_MAX = 25


def admin_specs(backends: tuple[str, ...] = ()) -> tuple[CommandSpec, ...]:
    """The admin commands: ``/admin <name>`` on every platform. Only admins may run them; the
    core checks it for every call, whatever the platform's client shows. ``backends``: those a
    workspace may choose among (``/admin backend``), offered as its choices."""

    def admin(name: str, description: str, *options: OptionSpec) -> CommandSpec:
        return CommandSpec(name, description, options, group=ADMIN)

    member = OptionSpec("member", "member", "The member", required=True)
    return (
        admin(
            "ban",
            "Stop a member from making images",
            member,
            _REASON,
            OptionSpec("duration", "string", "How long, e.g. 30m, 2h, 7d (empty: until unbanned)"),
            OptionSpec(
                "jobs", "string", "Their queued jobs: cancel (default) or keep", choices=("cancel", "keep")
            ),
        ),
        admin("unban", "Let a banned member make images again", member, _REASON),
        admin("bans", "List the banned members"),
        admin(
            "block",
            "Refuse prompts that contain a term",
            OptionSpec("term", "string", "The word or phrase", required=True),
            OptionSpec(
                "match",
                "string",
                "word (default): only as a whole word; substring: anywhere",
                choices=("word", "substring"),
            ),
        ),
        admin(
            "unblock", "Allow a blocked term again", OptionSpec("term", "string", "The term", required=True)
        ),
        admin("terms", "List the blocked terms"),
        admin("pause", "Pause the queue: queued jobs wait, new requests are refused", _REASON),
        admin("resume", "Resume the queue", _REASON),
        admin(
            "cancel",
            "Cancel any member's job",
            OptionSpec("job", "integer", "The job number", required=True, min=1, max=JOB_MAX),
            _REASON,
        ),
        admin(
            "clear",
            "Cancel every queued job (asks to confirm)",
            OptionSpec("confirm", "string", "The code the first /admin clear gave you"),
        ),
        admin(
            "limits",
            "Show or set this server's member limits (0: back to the default)",
            OptionSpec("queued", "integer", "Jobs one member may have waiting", min=0, max=100),
            OptionSpec("rate", "integer", "Requests one member may send per window", min=0, max=1000),
            OptionSpec("window", "integer", "The rate limit's window, in minutes", min=0, max=1440),
            _REASON,
        ),
        admin(
            "backend",
            "Show or choose the backend this server's jobs run on",
            OptionSpec(
                "name",
                "string",
                "A backend, or default",
                choices=(*backends, "default") if 1 < len(backends) < CHOICES_MAX else None,
            ),
            _REASON,
        ),
        admin("queue", "The whole queue: positions, members, ages"),
        admin("stats", "The last 24 hours: requests, results, errors, wait and run times"),
        admin(
            "audit",
            "The latest admin actions",
            OptionSpec("limit", "integer", "How many (default 20)", min=1, max=100),
        ),
    )


def invalid(sentence: str) -> GenbotError:
    return GenbotError(ErrorCode.INVALID_OPTION, sentence)


_OPTION = re.compile(r"(?:^|\s)([a-z_]+):(?=\s|$)")


def parse_text(text: str, specs: tuple[CommandSpec, ...]) -> tuple[CommandSpec, dict[str, str]]:
    """Parse ``/imagine a red fox`` or ``/imagine prompt: a red fox steps: 20`` into a command and
    its raw options. Without ``name:`` markers, the text is the first required option.

    Only the command's own option names act as markers, so ``a photo: sunset`` stays a prompt;
    an unknown ``name:`` at the very start is refused. The text is read as one clean line
    (:func:`bot.text.clean_line`). Raises :class:`GenbotError` (invalid_option).
    """
    stripped = clean_line(text)
    if not stripped.startswith("/"):
        raise invalid("Commands start with /, for example /imagine a red fox in snow.")
    name, _, rest = stripped[1:].partition(" ")
    name = name.lower()
    groups = {s.group for s in specs if s.group}
    if name in groups:
        sub, _, rest = rest.strip().partition(" ")
        spec = next((s for s in specs if s.group == name and s.name == sub.lower()), None)
        if spec is None:
            known = ", ".join(s.name for s in specs if s.group == name)
            if not sub:
                raise invalid(f"Say which /{name} command: {known}.")
            raise invalid(f"/{name} has no command {shown(sub)!r}. It has: {known}.")
    else:
        spec = next((s for s in specs if s.name == name and not s.group), None)
    if spec is None:
        known = ", ".join("/" + s.name for s in specs if not s.group)
        raise invalid(f"There is no command /{shown(name)}. Commands: {known}.")
    rest = rest.strip()
    options: dict[str, str] = {}
    if not rest:
        return spec, options
    marks = [m for m in _OPTION.finditer(rest) if spec.option(m.group(1))]
    leading = _OPTION.match(rest)
    if leading and not spec.option(leading.group(1)):
        raise unknown_option(spec, leading.group(1))
    head = rest[: marks[0].start()] if marks else rest
    if head.strip():
        first = next((o for o in spec.options if o.required), None) or (
            spec.options[0] if spec.options else None
        )
        if first is None:
            raise invalid(f"/{spec.key} takes no options.")
        options[first.name] = head.strip()
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(rest)
        key = mark.group(1)
        if key in options:
            raise invalid(f"The option {key} is given twice.")
        options[key] = rest[mark.end() : end].strip()
    return spec, options


def unknown_option(spec: CommandSpec, name: str) -> GenbotError:
    known = ", ".join(o.name for o in spec.options) or "no options"
    return invalid(f"/{spec.key} has no option {shown(name)!r}. It takes: {known}.")


def cleaned(request: CommandRequest) -> CommandRequest:
    """``request`` as the core reads it: every option value one clean line
    (:func:`bot.text.clean_line`) and the member's display name a clean, bounded one (their id
    when nothing visible is left). Raises :class:`GenbotError` (invalid_option) for an option value
    that is not text, which no adapter should pass on."""
    options: dict[str, str] = {}
    for name, value in request.options.items():
        if not isinstance(value, str):
            raise invalid(f"The {shown(str(name))} option is not valid: give it as text.")
        options[name] = clean_line(value)
    actor = request.actor
    name = clean_name(actor.display_name, actor.user_id)
    if name != actor.display_name:
        actor = replace(actor, display_name=name)
    return replace(request, actor=actor, options=options)


def check_known(spec: CommandSpec, options: dict[str, str]) -> None:
    for name in options:
        if spec.option(name) is None:
            raise unknown_option(spec, name)


#: A whole number as members type it: ASCII digits only (``int()`` also takes Arabic-Indic and
#: full-width digits, ``1_000`` and ``+7``), and no more of them than any option needs.
_DIGITS = re.compile(r"[0-9]{1,20}")


def parse_digits(raw: str) -> int | None:
    """``raw`` (trimmed) as a non-negative whole number written in at most 20 ASCII digits, else
    None. Every integer a member or a payload gives goes through this."""
    text = raw.strip()
    return int(text) if _DIGITS.fullmatch(text) else None


def parse_int(spec: CommandSpec, name: str, raw: str | None) -> int | None:
    """A whole-number option within its spec's range, or None when absent. Raises
    :class:`GenbotError` (invalid_option) with the option's one sentence for anything else:
    signs, fractions, exponents, separators, digits of other scripts."""
    if raw is None or raw.strip() == "":
        return None
    option = spec.option(name)
    assert option is not None
    lo = int(option.min) if option.min is not None else 0
    hi = int(option.max) if option.max is not None else None
    bounds = f"from {lo} to {hi}" if hi is not None else f"of at least {lo}"
    value = parse_digits(raw)
    if value is None or value < lo or (hi is not None and value > hi):
        raise invalid(f"{name.capitalize()} must be a whole number {bounds}.")
    return value


#: A number as members type it and as platforms send it (``-1.5``, ``.5``, ``1e-05``), ASCII only.
_NUMBER = re.compile(r"-?(?:[0-9]{1,20}(?:\.[0-9]{0,20})?|\.[0-9]{1,20})(?:[eE][-+]?[0-9]{1,3})?")
_YES = {
    "true": True,
    "yes": True,
    "on": True,
    "1": True,
    "false": False,
    "no": False,
    "off": False,
    "0": False,
}


def parse_options(spec: CommandSpec, options: dict[str, str], *, text_max: int) -> dict[str, Any]:
    """A command's raw options as typed values (see :data:`OPTION_TYPES`): text one clean, visible
    line of at most ``text_max`` characters (and one of its ``choices``), whole numbers and
    numbers within their bounds (ASCII digits only), yes/no as ``bool``, a member as given (their
    id: each adapter resolves pickers and mentions), a file as its adapter's reference. Absent
    options are left out. Raises
    :class:`GenbotError` (invalid_option) with one sentence for the first bad or missing one."""
    check_known(spec, options)
    values: dict[str, Any] = {}
    for option in spec.options:
        raw = options.get(option.name)
        if option.name in options and not isinstance(raw, str):  # no adapter passes one on
            raise invalid(f"The {option.name} option is not valid: give it as text.")
        if raw is None or not raw.strip():
            if option.required:
                raise invalid(f"The {option.name} is missing: {option.description.lower()}.")
            continue
        values[option.name] = _typed(spec, option, raw, text_max)
    return values


def _typed(spec: CommandSpec, option: OptionSpec, raw: str, text_max: int) -> Any:
    name = option.name
    if option.type == "integer":
        text = raw.strip()
        if text.startswith("-") and option.min is not None and option.min < 0:
            magnitude = parse_digits(text[1:])
            if magnitude is not None and option.min <= -magnitude:
                return -magnitude
            raise invalid(f"{name.capitalize()} must be a whole number from {option.min} to {option.max}.")
        return parse_int(spec, name, raw)
    if option.type == "number":
        text = raw.strip()
        value = float(text) if _NUMBER.fullmatch(text) else None
        if value is not None and not math.isfinite(value):
            value = None
        lo = option.min if option.min is not None else -math.inf
        hi = option.max if option.max is not None else math.inf
        if value is None or not lo <= value <= hi:
            bounds = (
                f" from {option.min:g} to {option.max:g}"
                if option.min is not None and option.max is not None
                else ""
            )
            raise invalid(f"{name.capitalize()} must be a number{bounds}, like 1.5.")
        return value
    if option.type == "boolean":
        answer = _YES.get(raw.strip().lower())
        if answer is None:
            raise invalid(f"{name.capitalize()} is yes or no.")
        return answer
    text = clean_line(raw)
    if option.type in ("attachment", "image"):
        if not is_visible(text) or len(text) > FILE_REF_MAX:
            raise invalid(f"Attach a file for {name}.")
        return text  # the adapter's reference; the core fetches the file
    if option.type == "member":
        member = member_of(text)  # a Slack or Discord mention, @name or an id: the id
        if member is None or len(member) > MEMBER_MAX or not is_visible(member) or " " in member:
            raise invalid(f"Say which member for {name}, for example @ana.")
        return member
    if not is_visible(text):
        raise invalid(f"The {name} has no visible character, only spaces or invisible marks.")
    if len(text) > text_max:
        raise invalid(f"The {name} is {len(text)} characters long; the limit is {text_max}.")
    if option.choices is not None:
        match = next((c for c in option.choices if c.lower() == text.lower()), None)
        if match is None:
            raise invalid(f"{name.capitalize()} must be one of: {', '.join(option.choices)}.")
        return match
    return text
