"""The error catalogue: every failure a member can see, in plain words.

Internal exceptions carry a catalogue code (:class:`GenbotError`); only the renderer and the command
replies turn a code into words, through :func:`describe`. No exception text, traceback or internal id is
ever part of these words: the logs get the detail.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ErrorCode(StrEnum):
    BACKEND_UNAVAILABLE = "backend_unavailable"
    BACKEND_ERROR = "backend_error"
    BACKEND_REFUSED = "backend_refused"
    TIMED_OUT = "timed_out"
    STUCK = "stuck"
    WORKER_LOST = "worker_lost"
    CONTENT_BLOCKED = "content_blocked"
    QUEUE_FULL = "queue_full"
    RATE_LIMITED = "rate_limited"
    QUEUE_PAUSED = "queue_paused"
    QUEUE_UNAVAILABLE = "queue_unavailable"
    INVALID_OPTION = "invalid_option"
    NOT_FOUND = "not_found"
    NOT_ALLOWED = "not_allowed"
    CANCELLED = "cancelled"
    CANCELLED_BY_ADMIN = "cancelled_by_admin"
    BANNED = "banned"
    CHAT_UNAVAILABLE = "chat_unavailable"
    INTERNAL = "internal"


@dataclass(frozen=True, slots=True)
class ErrorText:
    code: ErrorCode
    title: str
    what: str
    todo: str


_CATALOGUE: dict[ErrorCode, tuple[str, str, str]] = {
    ErrorCode.BACKEND_UNAVAILABLE: (
        "Service unavailable",
        "The service this job needs is not answering right now.",
        "Nothing to do: your request keeps its place in line and will start when the service recovers.",
    ),
    ErrorCode.BACKEND_ERROR: (
        "Service error",
        "The service this job runs on could not finish it.",
        "Try again in a moment; if it keeps happening, tell an admin.",
    ),
    ErrorCode.BACKEND_REFUSED: (
        "Refused by the service",
        "The service this job runs on refused this request under its own rules.",
        "Change the request (for an image: the prompt) and try again.",
    ),
    ErrorCode.TIMED_OUT: (
        "Took too long",
        "The job took longer than this server allows and was stopped.",
        "Try again with a smaller request (for an image: fewer steps or a smaller size).",
    ),
    ErrorCode.STUCK: (
        "Stopped responding",
        "The worker running your job stopped responding and the retry did not finish either.",
        "Try again; if it keeps happening, tell an admin.",
    ),
    ErrorCode.WORKER_LOST: (
        "Worker lost",
        "The worker running your job shut down before it finished.",
        "Try again; your request did not count against your limits.",
    ),
    ErrorCode.CONTENT_BLOCKED: (
        "Prompt not allowed",
        "Your prompt contains a term this server does not allow.",
        "Change the prompt and try again.",
    ),
    ErrorCode.QUEUE_FULL: (
        "Queue full",
        "Too many requests are waiting right now.",
        "Try again when some of the waiting requests have finished.",
    ),
    ErrorCode.RATE_LIMITED: (
        "Slow down",
        "You have sent many requests in a short time.",
        "Wait a few minutes, then try again.",
    ),
    ErrorCode.QUEUE_PAUSED: (
        "Queue paused",
        "An admin has paused the queue.",
        "Try again later; requests already queued will run when it resumes.",
    ),
    ErrorCode.QUEUE_UNAVAILABLE: (
        "Queue unavailable",
        "genbot can't reach its job queue right now; it may be restarting.",
        "Try again in a minute.",
    ),
    ErrorCode.INVALID_OPTION: (
        "Invalid option",
        "One of the options you gave is not valid.",
        "Check the command's options and try again.",
    ),
    ErrorCode.NOT_FOUND: (
        "No such job",
        "There is no job with that number that you can see.",
        "Use /queue to see your jobs and their numbers.",
    ),
    ErrorCode.NOT_ALLOWED: (
        "Not allowed",
        "Only the member who asked for this job, or an admin, can do that.",
        "Ask the member or an admin.",
    ),
    ErrorCode.CANCELLED: (
        "Cancelled",
        "This request was cancelled by the member who asked for it.",
        "Start it again whenever you like.",
    ),
    ErrorCode.CANCELLED_BY_ADMIN: (
        "Cancelled by an admin",
        "An admin cancelled this request.",
        "Ask the server's admins if you don't know why.",
    ),
    ErrorCode.BANNED: (
        "Not allowed to generate",
        "You are not allowed to use this bot on this server.",
        "Ask the server's admins if you think this is a mistake.",
    ),
    ErrorCode.CHAT_UNAVAILABLE: (
        "Can't post here",
        "genbot cannot post in this channel.",
        "Invite genbot to the channel, or use it in another one.",
    ),
    ErrorCode.INTERNAL: (
        "Something went wrong",
        "genbot hit an unexpected problem with this request.",
        "Try again; if it keeps happening, tell an admin.",
    ),
}


def describe(code: ErrorCode | str | None, detail: str | None = None, todo: str | None = None) -> ErrorText:
    """The member-facing words for a code; an unknown code reads as ``internal``.

    ``detail`` replaces the "what happened" sentence and ``todo`` the "what to do" one. Only pass
    text written for members (for example a validation message genbot itself wrote), never
    exception text.
    """
    try:
        known = ErrorCode(code) if code is not None else ErrorCode.INTERNAL
    except ValueError:
        known = ErrorCode.INTERNAL
    title, what, to_do = _CATALOGUE[known]
    return ErrorText(known, title, detail or what, todo or to_do)


class GenbotError(Exception):
    """The root of genbot's own exceptions; carries a catalogue code.

    ``member_detail`` is an optional sentence written for the member (never exception text).
    """

    def __init__(self, code: ErrorCode, member_detail: str | None = None, *, todo: str | None = None) -> None:
        super().__init__(code.value if member_detail is None else f"{code.value}: {member_detail}")
        self.code = code
        self.member_detail = member_detail
        self.todo = todo

    @property
    def text(self) -> ErrorText:
        return describe(self.code, self.member_detail, self.todo)
