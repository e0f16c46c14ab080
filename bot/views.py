"""From a generation row (and its live position) to a :class:`~bot.models.StatusView`. Pure."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

from bot.errors import ErrorCode, describe
from bot.models import Button, ErrorView, Generation, ResultFile, State, StatusView

CANCEL = Button("cancel", "Cancel", "danger")
#: Places shown exactly at the head of the line (``GENBOT_RENDERER__EXACT_POSITIONS``).
EXACT_POSITIONS = 10
MOVED_BACK = (
    "Moved back: a request set aside (paused by an admin, or waiting for its member's other job) "
    "rejoined the line ahead of yours, in the place its ticket gives it."
)
REROLL = Button("reroll", "Reroll", "secondary")


def format_duration(seconds: float) -> str:
    """``about 40 s``-style wording: rounded so that the text does not churn every second."""
    if seconds < 60:
        return f"{max(5, math.ceil(seconds / 5) * 5)} s"
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min" if minutes % 60 else f"{minutes // 60} h"


def wait_seconds(position: int, mean_run_s: float, capacity: int) -> float:
    """How long the job at ``position`` should wait before it starts: the ``position - 1`` jobs
    ahead of it, and the half-done job of the slot that frees first, each taking the recent mean
    run time, shared by the live worker capacity."""
    return (position - 0.5) * mean_run_s / max(1, capacity)


#: The edges of the coarse places behind the exact head: 1-2-5 steps, so a job's place changes
#: about twice per halving of the line (O(log N) edits while it waits).
STEPS = (1, 2, 5)


def place(position: int, exact: int) -> tuple[int, int]:
    """The place a message shows for ``position``: itself near the head (``exact`` places), else
    the coarse band ``(low, high)`` it falls in (#11-20, #21-50, #51-100, #101-200 ...)."""
    if position <= exact:
        return position, position
    low = exact
    scale = 1
    while True:
        for step in STEPS:
            high = step * scale
            if high > low and position <= high:
                return low + 1, high
            low = max(low, high)
        scale *= 10


def place_words(low: int, high: int) -> str:
    return f"#{low}" if low == high else f"#{low}-{high}"


def wait_words(seconds: float) -> str:
    """The wait as a member reads it: exact enough near the head ("about 40 s", "about 3 min"),
    a range further away ("12-15 min"), centred on the estimate."""
    if seconds < 60:
        return f"about {max(5, math.ceil(seconds / 5) * 5)} s"
    if seconds < 180:
        minutes, rest = divmod(math.ceil(seconds / 10) * 10, 60)
        return f"about {minutes} min {rest} s" if rest else f"about {minutes} min"
    low, high = seconds * 0.85 / 60, seconds * 1.15 / 60
    if high < 90:
        lo, hi = math.floor(low), math.ceil(high)
        return f"{lo}-{hi} min"
    lo_h, hi_h = math.floor(low / 30) / 2, math.ceil(high / 30) / 2
    return f"{lo_h:g}-{hi_h:g} h"


def _headline(
    gen: Generation, shown: tuple[int, int] | None, eta: float | None, aside: str | None, backend_down: bool
) -> str:
    if gen.state is State.QUEUED:
        if aside == "paused":
            return "Queued · paused by an admin"
        if aside == "held":
            return "Queued · waits for your other job"
        where = "" if shown is None else f" · {place_words(*shown)} in line"
        if backend_down:
            return f"Queued{where} · waiting for the service"
        if shown is None:
            return "Queued · starting"
        if eta is None:
            return f"Queued{where} · waiting for a worker"
        return f"Queued{where}"
    if gen.state is State.RUNNING:
        percent = _percent(gen)
        verb = str(gen.look.get("verb") or "Working")
        waiting = gen.meta.get("waiting")
        if isinstance(waiting, str) and waiting:  # in its service's own line (the Horde's)
            return f"{verb} · {waiting}"
        return f"{verb} · starting" if percent is None else f"{verb} · {math.floor(percent * 100 + 0.5)}%"
    if gen.state is State.SUCCEEDED:
        if gen.started_at and gen.finished_at:
            took = (gen.finished_at - gen.started_at).total_seconds()
            return f"Done · took {took:.0f} s" if took >= 1 else "Done"
        return "Done"
    if gen.state is State.CANCELLED:
        return describe(gen.error_code or ErrorCode.CANCELLED).title
    return describe(gen.error_code).title


def _percent(gen: Generation) -> float | None:
    progress = gen.meta.get("progress") or {}
    step, total = progress.get("step"), progress.get("total")
    if not isinstance(step, int) or not isinstance(total, int) or total <= 0:
        return None
    return min(1.0, step / total)


def _details(gen: Generation) -> str:
    """The job kind's line (stored with the row at submit, see :data:`~bot.models.LOOK`) and the
    job number."""
    details = gen.look.get("details")
    return f"{details} · job {gen.id}" if isinstance(details, str) and details else f"job {gen.id}"


def _text(gen: Generation) -> str | None:
    """The text a job reported (an answer as it streams, then the whole of it)."""
    text = gen.meta.get("text")
    return text if isinstance(text, str) and text and gen.state in (State.RUNNING, State.SUCCEEDED) else None


def _files(gen: Generation) -> tuple[ResultFile, ...]:
    """The files a finished job's result carries (see ``jobs.runner``), as kept in its row."""
    if gen.state is not State.SUCCEEDED or not isinstance(files := gen.meta.get("files"), list):
        return ()
    return tuple(
        ResultFile(str(f["key"]), str(f["name"]), str(f["content_type"]), int(f["size"]))
        for f in files
        if isinstance(f, dict)
    )


def build_view(
    gen: Generation,
    position: int | None,
    eta: float | None,
    *,
    aside: str | None = None,
    backend_down: bool = False,
    exact: int = EXACT_POSITIONS,
    shown_before: int | None = None,
) -> StatusView:
    """The status message of ``gen``. ``position`` is its live position (None when not waiting),
    shown exactly within the first ``exact`` places and as a band further back (:func:`place`);
    ``eta`` the seconds until it starts (None when no worker is alive); ``aside`` why a queued
    job is out of the line: ``"paused"`` (an admin paused its workspace's queue) or ``"held"``
    (its member runs as many jobs as they may); ``backend_down`` whether the circuit breaker of
    its backend is open (a queued job then says it waits for the service).

    ``shown_before`` is the place (its low end) the message showed last: a place further back
    than that says why (a request set aside rejoined the line ahead, in its ticket's place)."""
    error = None
    if gen.state in (State.FAILED, State.TIMED_OUT) or (gen.state is State.CANCELLED and gen.error_code):
        text = describe(gen.error_code or ErrorCode.INTERNAL)
        error = ErrorView(text.code.value, text.title, text.what, text.todo)
    preview = (gen.meta.get("preview") or {}).get("key") if gen.state is State.RUNNING else None
    note = None
    if gen.state is State.QUEUED and aside == "paused":
        note = "An admin paused the queue. Your request keeps its place and starts when it resumes."
    elif gen.state is State.QUEUED and aside == "held":
        note = "Members run one job at a time here; this one joins the line, in its place, when yours ends."
    elif gen.state is State.QUEUED and backend_down:
        down = describe(ErrorCode.BACKEND_UNAVAILABLE)
        note = f"{down.what} {down.todo}"
    elif gen.state is State.QUEUED and gen.attempts:
        note = "The worker running this job stopped; it will start again before newer requests."
    shown = place(position, exact) if gen.state is State.QUEUED and position is not None else None
    if note is None and shown is not None and shown_before is not None and shown[0] > shown_before:
        note = MOVED_BACK
    wait = None
    if shown is not None and eta is not None and aside is None and not backend_down:
        wait = wait_words(eta)
    return StatusView(
        job=gen.id,
        kind=gen.kind,
        state=gen.state,
        wait=wait,
        headline=_headline(gen, shown, eta, aside, backend_down),
        prompt=gen.prompt,
        details=_details(gen),
        requested_by=gen.user_name,
        progress=_percent(gen) if gen.state is State.RUNNING else None,
        preview_key=preview,
        image_key=gen.result_key if gen.state is State.SUCCEEDED else None,
        text=_text(gen),
        files=_files(gen),
        note=note,
        error=error,
        buttons=((REROLL,) if gen.look.get("reroll") else ()) if gen.state.terminal else (CANCEL,),
    )


def view_hash(view: StatusView) -> str:
    """A digest of everything a view shows but the wait; equal digests mean no edit is needed.
    The wait is left out: it is brought up to date whenever the message changes for another
    reason (its place, its state), so a long line costs no edit per tick of a clock."""
    payload = json.dumps(
        dataclasses.asdict(dataclasses.replace(view, wait=None)), sort_keys=True, default=str
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
