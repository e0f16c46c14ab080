"""Image generation: genbot's first plugin, written against :mod:`bot.api` like any other.

``/imagine prompt [negative] [size] [steps] [seed]`` queues an ``imagine`` job; the job asks the
configured image backend (``GENBOT_BACKEND__NAME``: the demo, or ``package.module:factory``) for
the picture, reporting each step with a preview. A finished image offers a Reroll: the same
options with a new seed.

Its settings are its section, ``GENBOT_PLUGINS__IMAGINE__*`` (:class:`ImagineSettings`: the
sizes and steps members may ask for). Their names before plugins, ``GENBOT_LIMITS__SIZES`` and the
like, are read for one release (``bot.config.MOVED``).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bot.api import (
    Call,
    Command,
    ImageResult,
    Job,
    JobKind,
    JobRequest,
    ListSetting,
    Option,
    Plugin,
    Settings,
)
from jobs.backends import FEATURES, backend_factory, backend_features
from jobs.backends.base import ImageBackend, ImageRequest

NAME = "imagine"
SEED_MAX = 2**32 - 1
SETTING = f"GENBOT_PLUGINS__{NAME.upper()}__"


class ImagineSettings(BaseModel):
    """What members may ask ``/imagine`` for: ``GENBOT_PLUGINS__IMAGINE__*``."""

    model_config = ConfigDict(extra="forbid")

    #: The sizes offered, ``WIDTHxHEIGHT``.
    sizes: ListSetting = Field(default_factory=lambda: ["512x512", "768x768", "512x768", "768x512"])
    default_size: str = "512x512"
    steps_min: int = Field(1, ge=1)
    steps_max: int = Field(50, ge=1)
    default_steps: int = Field(20, ge=1)

    @field_validator("sizes")
    @classmethod
    def _sizes_are_wxh(cls, sizes: list[str]) -> list[str]:
        if not sizes:
            raise ValueError("give at least one size")
        for size in sizes:
            width, _, height = size.partition("x")
            if not (width.isdigit() and height.isdigit()):
                raise ValueError(f"{size!r} is not WIDTHxHEIGHT")
        return sizes

    @model_validator(mode="after")
    def _defaults_within_limits(self) -> ImagineSettings:
        if self.default_size not in self.sizes:
            raise ValueError(
                f"{SETTING}DEFAULT_SIZE ({self.default_size}) must be one of {SETTING}SIZES "
                f"({','.join(self.sizes)})"
            )
        if not self.steps_min <= self.default_steps <= self.steps_max:
            raise ValueError(
                f"{SETTING}DEFAULT_STEPS ({self.default_steps}) must lie between {SETTING}STEPS_MIN "
                f"({self.steps_min}) and {SETTING}STEPS_MAX ({self.steps_max})"
            )
        return self


def image_request(text: str, options: Mapping[str, Any]) -> ImageRequest:
    """The backend's request for a job's text and stored options."""
    return ImageRequest(
        prompt=text,
        negative=str(options.get("negative", "")),
        width=int(options["width"]),
        height=int(options["height"]),
        steps=int(options["steps"]),
        seed=int(options["seed"]),
    )


def job_options(request: ImageRequest) -> dict[str, Any]:
    """What an image job's row keeps of ``request`` besides its prompt (the job's text)."""
    options: dict[str, Any] = {
        "width": request.width,
        "height": request.height,
        "steps": request.steps,
        "seed": request.seed,
    }
    if request.negative:
        options["negative"] = request.negative
    return options


def details(options: Mapping[str, Any], features: frozenset[str] = FEATURES) -> str:
    """``512x512 · 20 steps · seed 42 · without: blur``: what the backend took (``features``)."""
    parts = [f"{options.get('width')}x{options.get('height')}"]
    if "steps" in features:
        parts.append(f"{options.get('steps')} steps")
    if "seed" in features:
        parts.append(f"seed {options.get('seed')}")
    if options.get("negative") and "negative" in features:
        parts.append(f"without: {options['negative']}")
    return " · ".join(parts)


def reroll(options: Mapping[str, Any]) -> Mapping[str, Any]:
    return {**options, "seed": secrets.randbelow(SEED_MAX + 1)}


def plugin(settings: Settings) -> Plugin:
    """The plugin, with the backend the settings name (made on the first job, in the worker)."""
    limits = settings.plugins.validated(NAME, ImagineSettings)
    make_backend = backend_factory(settings)
    features = backend_features(settings)

    def prepare(call: Call) -> JobRequest:
        opts = call.options
        width, _, height = str(opts.get("size") or limits.default_size).partition("x")
        request = ImageRequest(
            prompt=str(opts["prompt"]),
            negative=str(opts.get("negative", "")),
            width=int(width),
            height=int(height),
            steps=int(opts.get("steps", limits.default_steps)),
            seed=int(opts.get("seed", secrets.randbelow(SEED_MAX + 1))),
        )
        return JobRequest(request.prompt, job_options(request))

    return Plugin(
        name=NAME,
        commands=(
            Command(
                NAME,
                "Make an image from a text prompt",
                tuple(
                    option
                    for option in (
                        Option("prompt", "string", "What to draw", required=True),
                        Option("negative", "string", "What to keep out of the image"),
                        Option("size", "string", "Width x height", choices=tuple(limits.sizes)),
                        Option(
                            "steps",
                            "integer",
                            "More steps: finer, slower",
                            min=limits.steps_min,
                            max=limits.steps_max,
                        ),
                        Option("seed", "integer", "Same seed, same image", min=0, max=SEED_MAX),
                    )
                    # Only what the service takes: OpenAI Images has no negative, steps or seed.
                    if option.name in ("prompt", "size") or option.name in features
                ),
                job=NAME,
                prepare=prepare,
            ),
        ),
        # Keyed by the setting (a dotted path for a backend of its own), as before plugins.
        jobs=(image_kind(make_backend, settings.backend.name, features),),
        settings=ImagineSettings,
    )


def image_kind(
    make_backend: Callable[[], ImageBackend], backend_name: str, features: frozenset[str] = FEATURES
) -> JobKind:
    """The ``imagine`` job kind, drawing with the backend ``make_backend`` makes on its first job
    (whose breaker and ETA are ``backend_name``'s, which takes ``features``)."""
    made: list[ImageBackend] = []

    async def generate(job: Job) -> ImageResult:
        async def progress(
            step: int, total: int, preview: bytes | None, *, waiting: str | None = None
        ) -> None:
            if waiting is not None:
                await job.progress(waiting=waiting)
            else:
                await job.progress(step, total, preview=preview)

        if not made:
            made.append(make_backend())
        return await made[0].generate(image_request(job.text, job.options), progress)

    demo = " · demo backend" if backend_name == "demo" else ""
    return JobKind(
        NAME,
        generate,
        verb="Generating",
        backend=backend_name,
        details=lambda options: details(options, features) + demo,
        reroll=reroll,
    )
