"""Image backends. ``GENBOT_BACKEND__NAME`` is ``demo`` or a dotted path ``package.module:factory``
(or ``package.module.factory``) to a callable that takes the :class:`~bot.config.Settings` and
returns an :class:`~jobs.backends.base.ImageBackend`."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import cast

from bot.config import ConfigError, Settings
from jobs.backends.base import ImageBackend
from jobs.backends.demo import DemoBackend


class BackendNotFound(ConfigError):
    """``GENBOT_BACKEND__NAME`` names nothing that can be imported."""


def load_backend(settings: Settings) -> ImageBackend:
    return backend_factory(settings)()


def backend_factory(settings: Settings) -> Callable[[], ImageBackend]:
    """What makes the backend ``GENBOT_BACKEND__NAME`` names, found now (so that a wrong name
    stops start-up) and called later, where images are made: a backend that loads a model or
    opens a client does so in the worker only. Raises :class:`BackendNotFound`."""
    name = settings.backend.name
    if name == "demo":
        return lambda: DemoBackend(step_delay_s=settings.backend.demo_step_delay_s)
    module_name, sep, attr = name.partition(":")
    if not sep:
        module_name, _, attr = name.rpartition(".")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise BackendNotFound(
            f"GENBOT_BACKEND__NAME: no backend {name!r} (use 'demo' or 'package.module:factory')"
        ) from exc
    return lambda: cast("ImageBackend", factory(settings))
