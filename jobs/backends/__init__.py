"""Image backends. ``GENBOT_BACKEND__NAME`` is ``demo``, ``a1111`` (AUTOMATIC1111, Forge, SD.Next:
its settings are ``GENBOT_BACKENDS__A1111__*``), ``openai`` (OpenAI Images and compatible
services, with the ``openai`` extra: ``GENBOT_BACKENDS__OPENAI__*``), ``horde`` (AI Horde:
``GENBOT_BACKENDS__HORDE__*``), ``comfyui`` (ComfyUI: ``GENBOT_BACKENDS__COMFYUI__*``) or a dotted path
``package.module:factory`` (or ``package.module.factory``) to a callable that takes the
:class:`~bot.config.Settings` and returns an :class:`~jobs.backends.base.ImageBackend`."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import cast

from bot.config import ConfigError, Settings
from jobs.backends.a1111 import A1111Backend, A1111Settings
from jobs.backends.base import ImageBackend
from jobs.backends.comfyui import ComfyUIBackend, ComfyUISettings
from jobs.backends.demo import DemoBackend
from jobs.backends.horde import HordeBackend, HordeSettings

#: What ``/imagine`` offers besides the prompt and the size, where the service takes it.
FEATURES = frozenset({"negative", "steps", "seed"})
#: The services that take fewer (OpenAI Images has no negative prompt, steps or seed).
FEATURES_OF = {"openai": frozenset[str]()}


def offered_backends(settings: Settings) -> tuple[str, ...]:
    """The backends image jobs may run on: ``GENBOT_BACKEND__NAME`` (the default) first, then
    ``GENBOT_BACKEND__CHOICES``."""
    return tuple(dict.fromkeys((settings.backend.name, *settings.backend.choices)))


def backend_features(settings: Settings, name: str | None = None) -> frozenset[str]:
    """Which of :data:`FEATURES` the backend ``name`` (``GENBOT_BACKEND__NAME``'s by default)
    takes (a backend of one's own takes them all)."""
    return FEATURES_OF.get(name or settings.backend.name, FEATURES)


class BackendNotFound(ConfigError):
    """``GENBOT_BACKEND__NAME`` names nothing that can be imported."""


def load_backend(settings: Settings) -> ImageBackend:
    return backend_factory(settings)()


def backend_factory(settings: Settings, name: str | None = None) -> Callable[[], ImageBackend]:
    """What makes the backend ``name`` (``GENBOT_BACKEND__NAME``'s by default), found now (so that
    a wrong name stops start-up) and called later, where images are made: a backend that loads a
    model or opens a client does so in the worker only. Its own settings are read now too. Raises
    :class:`BackendNotFound`, or :class:`ConfigError` naming a setting at fault."""
    name = name or settings.backend.name
    if name == "demo":
        return lambda: DemoBackend(step_delay_s=settings.backend.demo_step_delay_s)
    if name == A1111Backend.name:
        a1111 = settings.backends.validated(name, A1111Settings)
        return lambda: A1111Backend(a1111)
    if name == HordeBackend.name:
        horde = settings.backends.validated(name, HordeSettings)
        return lambda: HordeBackend(horde)
    if name == ComfyUIBackend.name:
        comfyui = settings.backends.validated(name, ComfyUISettings)
        return lambda: ComfyUIBackend(comfyui)
    if name == "openai":
        try:
            from jobs.backends.openai_images import OpenAIImagesBackend, OpenAISettings
        except ImportError:
            raise ConfigError(
                "GENBOT_BACKEND__NAME=openai needs the openai package: pip install 'genbot[openai]'"
            ) from None
        chosen = settings.backends.validated(name, OpenAISettings)
        return lambda: OpenAIImagesBackend(chosen)
    module_name, sep, attr = name.partition(":")
    if not sep:
        module_name, _, attr = name.rpartition(".")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        setting = "GENBOT_BACKEND__NAME" if name == settings.backend.name else "GENBOT_BACKEND__CHOICES"
        raise BackendNotFound(
            f"{setting}: no backend {name!r} "
            "(use 'demo', 'a1111', 'comfyui', 'openai', 'horde' or 'package.module:factory')"
        ) from exc
    return lambda: cast("ImageBackend", factory(settings))
