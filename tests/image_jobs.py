"""Rows of image jobs for tests that make them without going through ``/imagine``."""

from __future__ import annotations

import uuid

from bot.app import plugins_of
from bot.commands import CommandSpec
from bot.config import load_settings
from bot.models import Actor, NewGeneration
from bot.plugins import all_specs
from jobs.backends.base import ImageBackend, ImageRequest
from jobs.breaker import Breaker
from jobs.imagine import NAME, details, image_kind, job_options
from jobs.runner import KindRuntime


def image_job(
    actor: Actor,
    channel: str,
    options: ImageRequest,
    backend: str = "demo",
    request_key: str | None = None,
) -> NewGeneration:
    """The new row of an ``imagine`` job for ``options``, as the image plugin submits it."""
    stored = job_options(options)
    return NewGeneration(
        actor=actor,
        channel=channel,
        kind="imagine",
        text=options.prompt,
        options=stored,
        backend=backend,
        look={"verb": "Generating", "details": details(stored), "reroll": True},
        request_key=request_key or uuid.uuid4().hex,
    )


def image_kinds(
    backend: ImageBackend, breaker: Breaker, backend_name: str | None = None
) -> dict[str, KindRuntime]:
    """A runner's job kinds: ``imagine`` only, drawing with ``backend`` (in the line
    ``backend_name``, its name by default)."""
    name = backend_name or backend.name
    return {NAME: KindRuntime(image_kind({name: lambda: backend}), {name: breaker})}


def every_spec() -> tuple[CommandSpec, ...]:
    """Every command of a default deployment (genbot's own and the image plugin's), as a bot
    built from the default settings registers them."""
    return all_specs(plugins_of(load_settings(_env_file=None)))
