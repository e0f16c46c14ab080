"""Finding and checking plugins (see :mod:`bot.api`): genbot's own, the installed ones (the
``genbot.plugins`` entry-point group) and those ``GENBOT_PLUGINS__MODULES`` names.

Everything that can be wrong with a plugin is found here, before anything starts, and said in one
line that names the plugin (:class:`PluginError`): it does not import, it is not a plugin, its
name or a command's clashes with another, a command queues a job kind nobody defines, its settings
section does not validate.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from pydantic import ValidationError

from bot.api import Command, JobKind, Plugin
from bot.commands import ADMIN, CommandSpec, admin_specs, command_specs
from bot.config import ENV_NESTED, PLUGIN_SECTIONS, ConfigError, Settings

ENTRY_POINT_GROUP = "genbot.plugins"
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
#: Discord's rule for command and option names (lowercase; Slack's commands are stricter still).
_COMMAND = re.compile(r"[a-z0-9_-]{1,32}")


class PluginError(ConfigError):
    """A plugin cannot be loaded; the one line names it and says why."""


@dataclass(frozen=True, slots=True)
class LoadedPlugin:
    plugin: Plugin
    #: Where it came from: ``built-in``, ``entry point <name>`` or ``GENBOT_PLUGINS__MODULES``.
    source: str
    target: str
    #: Its settings section, validated by its model (None without one).
    settings: Any = None


@dataclass(slots=True)
class Plugins:
    """The loaded plugins: every command's and job kind's plugin, by name."""

    loaded: list[LoadedPlugin] = field(default_factory=list)
    commands: dict[str, tuple[Command, LoadedPlugin]] = field(default_factory=dict)
    kinds: dict[str, tuple[JobKind, LoadedPlugin]] = field(default_factory=dict)

    def specs(self) -> tuple[CommandSpec, ...]:
        """The plugins' commands as the core's specs: an admin command is ``/admin <name>``."""
        return tuple(
            CommandSpec(
                c.name,
                c.description,
                c.options,
                group=ADMIN if c.admin else None,
                public=c.job is not None or c.public,
            )
            for c, _ in self.commands.values()
        )

    def command(self, key: str) -> tuple[Command, LoadedPlugin] | None:
        """The plugin command typed as ``key`` (``ask``, ``admin purge``)."""
        return self.commands.get(key)

    def kind(self, name: str) -> tuple[JobKind, LoadedPlugin] | None:
        return self.kinds.get(name)

    def add(self, loaded: LoadedPlugin, reserved: Iterable[str] = ()) -> None:
        """Register ``loaded``; raises :class:`PluginError` for a clash or a dangling job kind."""
        plugin = loaded.plugin
        where = f"plugin {plugin.name!r} ({loaded.source} {loaded.target})"
        if not _NAME.fullmatch(plugin.name):
            raise PluginError(f"{where}: its name must be lowercase letters, digits and _, at most 32")
        if any(other.plugin.name == plugin.name for other in self.loaded):
            raise PluginError(f"{where}: another plugin of that name is loaded already")
        kinds = {kind.name: kind for kind in plugin.jobs}
        for kind in plugin.jobs:
            if kind.name in self.kinds:
                raise PluginError(f"{where}: job kind {kind.name!r} is defined twice")
        taken = set(reserved) | set(self.commands)
        for command in plugin.commands:
            key = f"{ADMIN} {command.name}" if command.admin else command.name
            if not _COMMAND.fullmatch(command.name):
                raise PluginError(f"{where}: command {command.name!r} must be 1-32 of a-z 0-9 _ -")
            if key in taken:
                raise PluginError(f"{where}: the command /{key} exists already")
            if (command.job is None) == (command.run is None):
                raise PluginError(f"{where}: /{key} needs either a job kind or a run function")
            if command.job is not None and command.job not in kinds and command.job not in self.kinds:
                raise PluginError(f"{where}: /{key} queues job kind {command.job!r}, which no plugin defines")
            taken.add(key)
        self.loaded.append(loaded)
        for kind in plugin.jobs:
            self.kinds[kind.name] = (kind, loaded)
        for command in plugin.commands:
            self.commands[f"{ADMIN} {command.name}" if command.admin else command.name] = (command, loaded)


def all_specs(plugins: Plugins) -> tuple[CommandSpec, ...]:
    """Every command, as the platforms register them: the plugins' commands (``/imagine`` first),
    genbot's member commands, then the admin commands."""
    return plugins.specs() + command_specs() + admin_specs()


def _import(target: str) -> object:
    module_name, sep, attr = target.partition(":")
    if not sep:
        module_name, _, attr = target.rpartition(".")
    module = importlib.import_module(module_name)
    value: object = module
    for part in attr.split("."):
        value = getattr(value, part)
    return value


def _candidates(settings: Settings, builtin: Sequence[str]) -> Iterator[tuple[str, str, Any]]:
    """(source, target, load) for every plugin to load, genbot's own first."""
    for target in builtin:
        yield "built-in", target, lambda target=target: _import(target)
    for point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda p: p.name):
        yield f"entry point {point.name!r}", point.value, point.load
    for target in settings.plugins.modules:
        yield "GENBOT_PLUGINS__MODULES", target, lambda target=target: _import(target)


def _section(settings: Settings, plugin: Plugin, where: str) -> Any:
    raw = settings.plugins.section(plugin.name)
    if plugin.settings is None:
        if raw:
            raise PluginError(f"{_var(plugin.name, next(iter(raw)))}: {where} has no settings")
        return None
    try:
        return plugin.settings.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"]) or "?"
        message = "is not a setting of it" if error["type"] == "extra_forbidden" else error["msg"]
        raise PluginError(f"{_var(plugin.name, key)}: {message} ({where})") from None


def _var(plugin: str, key: str) -> str:
    return f"{PLUGIN_SECTIONS}{plugin}{ENV_NESTED}{key}".upper()


def load_plugins(settings: Settings, builtin: Sequence[str], reserved: Iterable[str] = ()) -> Plugins:
    """Load and check every plugin (see the module docstring). ``builtin``: genbot's own plugins'
    targets; ``reserved``: the core's command keys, which no plugin may take. Raises
    :class:`PluginError` for the first that fails; nothing has started then."""
    plugins = Plugins()
    reserved = tuple(reserved)
    for source, target, load in _candidates(settings, builtin):
        try:
            value = load()
            plugin = value if isinstance(value, Plugin) else value(settings) if callable(value) else value
        except ConfigError:
            raise
        except Exception as exc:
            raise PluginError(
                f"plugin {target} ({source}) failed to load: {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(plugin, Plugin):
            raise PluginError(
                f"plugin {target} ({source}) is not a bot.api.Plugin (nor a function of the settings "
                "that returns one)"
            )
        where = f"plugin {plugin.name!r}"
        plugins.add(LoadedPlugin(plugin, source, target, _section(settings, plugin, where)), reserved)
    names = {loaded.plugin.name for loaded in plugins.loaded}
    for section in settings.plugins.sections():
        if section not in names:
            raise PluginError(
                f"{PLUGIN_SECTIONS}{section.upper()}{ENV_NESTED}*: no loaded plugin is called {section!r} "
                f"(loaded: {', '.join(sorted(names))})"
            )
    return plugins


def describe(plugins: Plugins) -> str:
    """What ``genbot plugins`` prints: each plugin, where it came from, its commands, job kinds
    and settings."""
    lines = []
    for loaded in plugins.loaded:
        plugin = loaded.plugin
        lines.append(f"{plugin.name}  ({loaded.source}: {loaded.target})")
        for command in plugin.commands:
            key = f"{ADMIN} {command.name}" if command.admin else command.name
            options = " ".join(
                f"{o.name}:{o.type}" if o.required else f"[{o.name}:{o.type}]" for o in command.options
            )
            what = f"queues {command.job}" if command.job else "answers"
            lines.append(f"  /{key} {options}".rstrip() + f"  ({what}) {command.description}")
        for kind in plugin.jobs:
            lines.append(f"  job kind {kind.name}: backend {kind.backend_name}")
        if plugin.settings is not None:
            for name, info in plugin.settings.model_fields.items():
                default = "required" if info.is_required() else f"default {info.default!r}"
                lines.append(f"  setting {_var(plugin.name, name)} ({default})")
    return "\n".join(lines)
