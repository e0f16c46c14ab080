"""From a generation row (and its live position) to a :class:`~bot.models.StatusView`. Pure."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

from bot.errors import ErrorCode, describe
from bot.models import Button, ErrorView, Generation, State, StatusView

CANCEL = Button("cancel", "Cancel", "danger")
REROLL = Button("reroll", "Reroll", "secondary")


def format_duration(seconds: float) -> str:
    """``about 40 s``-style wording: rounded so that the text does not churn every second."""
    if seconds < 60:
        return f"{max(5, math.ceil(seconds / 5) * 5)} s"
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min" if minutes % 60 else f"{minutes // 60} h"


def eta_seconds(position: int, mean_run_s: float, capacity: int) -> float:
    """ETA = position x recent mean run time / live worker capacity."""
    return position * mean_run_s / max(1, capacity)


def _headline(
    gen: Generation, position: int | None, eta: float | None, aside: str | None, backend_down: bool
) -> str:
    if gen.state is State.QUEUED:
        if aside == "paused":
            return "Queued · paused by an admin"
        if aside == "held":
            return "Queued · waits for your other job"
        if backend_down:
            where = "" if position is None else f" · #{position} in line"
            return f"Queued{where} · waiting for the image service"
        if position is None:
            return "Queued · starting"
        if eta is None:
            return f"Queued · #{position} in line · waiting for a worker"
        return f"Queued · #{position} in line · about {format_duration(eta)}"
    if gen.state is State.RUNNING:
        percent = _percent(gen)
        return (
            "Generating · starting" if percent is None else f"Generating · {math.floor(percent * 100 + 0.5)}%"
        )
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
    opts = gen.options
    parts = [f"{opts.get('width')}x{opts.get('height')}", f"{opts.get('steps')} steps"]
    parts.append(f"seed {opts.get('seed')}")
    parts.append(f"job {gen.id}")
    if gen.negative:
        parts.append(f"without: {gen.negative}")
    if gen.backend == "demo":
        parts.append("demo backend")
    return " · ".join(parts)


def build_view(
    gen: Generation,
    position: int | None,
    eta: float | None,
    *,
    aside: str | None = None,
    backend_down: bool = False,
) -> StatusView:
    """The status message of ``gen``. ``position`` is its live position (None when not waiting),
    ``eta`` the seconds until it is done (None when no worker is alive), ``aside`` why a queued
    job is out of the line: ``"paused"`` (an admin paused its workspace's queue) or ``"held"``
    (its member runs as many jobs as they may), and ``backend_down`` whether the circuit breaker
    of its backend is open (a queued job then says it waits for the service)."""
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
        note = "The worker making this image stopped; it will start again before newer requests."
    return StatusView(
        job=gen.id,
        state=gen.state,
        headline=_headline(gen, position, eta, aside, backend_down),
        prompt=gen.prompt,
        details=_details(gen),
        requested_by=gen.user_name,
        progress=_percent(gen) if gen.state is State.RUNNING else None,
        preview_key=preview,
        image_key=gen.result_key if gen.state is State.SUCCEEDED else None,
        note=note,
        error=error,
        buttons=(REROLL,) if gen.state.terminal else (CANCEL,),
    )


def view_hash(view: StatusView) -> str:
    """A digest of everything a view shows; equal digests mean no edit is needed."""
    payload = json.dumps(dataclasses.asdict(view), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
