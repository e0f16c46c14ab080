"""Image generation: genbot's first plugin, written against :mod:`bot.api` like any other.

``/imagine prompt [negative] [size] [steps] [seed] [backend]`` queues an ``imagine`` job; the job
asks its image backend for the picture, reporting each step with a preview. The backends are
``GENBOT_BACKEND__NAME`` (the default) and ``GENBOT_BACKEND__CHOICES``: each is a line of its own
(its positions, workers, ETA and breaker); a workspace's admins choose its backend with ``/admin
backend``, and with several the command offers a ``backend`` option. A finished image offers a
Reroll: the same options with a new seed, on the same backend.

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
    Invalid,
    Job,
    JobKind,
    JobRequest,
    ListSetting,
    Option,
    Plugin,
    Settings,
)
from jobs.backends import FEATURES, backend_factory, backend_features, offered_backends
from jobs.backends.base import ImageBackend, ImageRequest

NAME = "imagine"
SEED_MAX = 2**32 - 1
#: The most choices an option may list (Discord's limit).
CHOICES_MAX = 25
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
    """``512x512 · 20 steps · seed 42 · without: blur``: what the backend took (``features``),
    and ``· on a1111`` when the job chose among several backends."""
    parts = [f"{options.get('width')}x{options.get('height')}"]
    if "steps" in features:
        parts.append(f"{options.get('steps')} steps")
    if "seed" in features:
        parts.append(f"seed {options.get('seed')}")
    if options.get("negative") and "negative" in features:
        parts.append(f"without: {options['negative']}")
    if options.get("backend"):
        parts.append(f"on {options['backend']}")
    return " · ".join(parts)


def reroll(options: Mapping[str, Any]) -> Mapping[str, Any]:
    return {**options, "seed": secrets.randbelow(SEED_MAX + 1)}


def plugin(settings: Settings) -> Plugin:
    """The plugin, with the backends the settings name (each made on its first job, in the
    worker)."""
    limits = settings.plugins.validated(NAME, ImagineSettings)
    names = offered_backends(settings)
    makers = {name: backend_factory(settings, name) for name in names}
    features_of = {name: backend_features(settings, name) for name in names}
    features = frozenset[str]().union(*features_of.values())

    def prepare(call: Call) -> JobRequest:
        opts = call.options
        backend = str(opts.get("backend") or call.backend or names[0])
        if backend not in makers:  # more backends than a choice list holds: typed, and checked here
            raise Invalid(f"The backends are {', '.join(names)}.")
        lacking = [o for o in ("negative", "steps", "seed") if o in opts and o not in features_of[backend]]
        if lacking:
            raise Invalid(
                f"The {backend} backend takes no {' or '.join(lacking)}: leave "
                f"{'it' if len(lacking) == 1 else 'them'} out, or choose another backend."
            )
        width, _, height = str(opts.get("size") or limits.default_size).partition("x")
        request = ImageRequest(
            prompt=str(opts["prompt"]),
            negative=str(opts.get("negative", "")),
            width=int(width),
            height=int(height),
            steps=int(opts.get("steps", limits.default_steps)),
            seed=int(opts.get("seed", secrets.randbelow(SEED_MAX + 1))),
        )
        options = job_options(request)
        if len(names) > 1:
            options["backend"] = backend  # for the details line
        return JobRequest(request.prompt, options, backend=backend)

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
                        Option(
                            "backend",
                            "string",
                            "The image service to draw with",
                            choices=names if len(names) <= CHOICES_MAX else None,
                        ),
                    )
                    # Only what the services take: OpenAI Images has no negative, steps or seed.
                    if option.name in ("prompt", "size")
                    or option.name in features
                    or (option.name == "backend" and len(names) > 1)
                ),
                job=NAME,
                prepare=prepare,
            ),
        ),
        # Keyed by the settings (a dotted path for a backend of its own), as before plugins.
        jobs=(image_kind(makers, features_of),),
        settings=ImagineSettings,
    )


def image_kind(
    makers: Mapping[str, Callable[[], ImageBackend]], features_of: Mapping[str, frozenset[str]] | None = None
) -> JobKind:
    """The ``imagine`` job kind, drawing with the backend of the job's line: ``makers`` makes
    each (by name, the default first) on its first job; ``features_of`` says which options each
    takes (all of :data:`FEATURES` if unsaid)."""
    made: dict[str, ImageBackend] = {}
    default = next(iter(makers))

    async def generate(job: Job) -> ImageResult:
        async def progress(
            step: int, total: int, preview: bytes | None, *, waiting: str | None = None
        ) -> None:
            if waiting is not None:
                await job.progress(waiting=waiting)
            else:
                await job.progress(step, total, preview=preview)

        if job.backend not in made:
            made[job.backend] = makers[job.backend]()
        return await made[job.backend].generate(image_request(job.text, job.options), progress)

    def described(options: Mapping[str, Any]) -> str:
        backend = str(options.get("backend") or default)
        demo = " · demo backend" if backend == "demo" else ""
        return details(options, (features_of or {}).get(backend, FEATURES)) + demo

    return JobKind(
        NAME,
        generate,
        verb="Generating",
        backend=default,
        backends=tuple(makers) if len(makers) > 1 else (),
        details=described,
        reroll=reroll,
    )
