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

from bot.api import Command, JobKind, Plugin
from bot.commands import ADMIN, CommandSpec, admin_specs, command_specs
from bot.config import ENV_NESTED, PLUGIN_SECTIONS, ConfigError, Settings

ENTRY_POINT_GROUP = "genbot.plugins"
#: Plugin and job kind names (a row's ``kind`` column holds 32 characters).
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
#: Discord's rule for command names (lowercase; Slack's commands are stricter still).
_COMMAND = re.compile(r"[a-z0-9_-]{1,32}")
#: Option names: what the text syntax (``name: value``) reads, within Discord's rule.
_OPTION_NAME = re.compile(r"[a-z_]{1,32}")
#: Names the core keeps: its command group, Slack's ``/genbot`` and its ``help``, and the one key
#: of ``GENBOT_PLUGINS__*`` that is not a plugin's section.
RESERVED_COMMANDS = frozenset({ADMIN, "genbot", "help"})
RESERVED_PLUGINS = frozenset({"modules"})
#: Discord's limits for one command (checked here, so that a sync never fails on a plugin).
DESCRIPTION_MAX = 100
OPTIONS_MAX = 25
CHOICES_MAX = 25
SUBCOMMANDS_MAX = 25
#: A row's ``backend`` column holds 100 characters.
BACKEND_MAX = 100


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

    def choosable_backends(self) -> tuple[str, ...]:
        """The backends a workspace may choose among: those of the kinds that have several."""
        return tuple(
            dict.fromkeys(
                b for kind, _loaded in self.kinds.values() if len(kind.lines) > 1 for b in kind.lines
            )
        )

    def kind(self, name: str) -> tuple[JobKind, LoadedPlugin] | None:
        return self.kinds.get(name)

    def add(self, loaded: LoadedPlugin, reserved: Iterable[str] = ()) -> None:
        """Register ``loaded``; raises :class:`PluginError` for a clash or a dangling job kind."""
        plugin = loaded.plugin
        where = f"plugin {plugin.name!r} ({loaded.source} {loaded.target})"
        if not _NAME.fullmatch(plugin.name) or plugin.name in RESERVED_PLUGINS:
            raise PluginError(
                f"{where}: its name must be lowercase letters, digits and _, at most 32, and not "
                f"{', '.join(sorted(RESERVED_PLUGINS))}"
            )
        if any(other.plugin.name == plugin.name for other in self.loaded):
            raise PluginError(f"{where}: another plugin of that name is loaded already")
        kinds: dict[str, JobKind] = {}
        for kind in plugin.jobs:
            if not _NAME.fullmatch(kind.name):
                raise PluginError(
                    f"{where}: job kind {kind.name!r} must be lowercase letters, digits and _, at most 32"
                )
            if kind.name in self.kinds or kind.name in kinds:
                raise PluginError(f"{where}: job kind {kind.name!r} is defined twice")
            if not all(0 < len(backend) <= BACKEND_MAX for backend in kind.lines):
                raise PluginError(
                    f"{where}: job kind {kind.name!r}: its backend names are 1 to {BACKEND_MAX} characters"
                )
            if kind.backends and kind.backend_name not in kind.backends:
                raise PluginError(
                    f"{where}: job kind {kind.name!r}: its backends lack its backend {kind.backend_name!r}"
                )
            kinds[kind.name] = kind
        taken = set(reserved) | set(self.commands)
        admins = sum(1 for key in taken if key.startswith(f"{ADMIN} "))
        for command in plugin.commands:
            key = f"{ADMIN} {command.name}" if command.admin else command.name
            if not _COMMAND.fullmatch(command.name) or command.name in RESERVED_COMMANDS:
                raise PluginError(
                    f"{where}: command {command.name!r} must be 1-32 of a-z 0-9 _ -, and not "
                    f"{', '.join(sorted(RESERVED_COMMANDS))}"
                )
            if key in taken:
                raise PluginError(f"{where}: the command /{key} exists already")
            if command.admin:
                admins += 1
                if admins > SUBCOMMANDS_MAX:
                    raise PluginError(
                        f"{where}: /{key} would make more than {SUBCOMMANDS_MAX} /{ADMIN} commands"
                    )
            _check_options(f"{where}: /{key}", command)
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


def _check_options(where: str, command: Command) -> None:
    """What every platform needs of a command's spec, as one line (Discord refuses the rest only
    when the commands are synced, and a bad option name breaks its client at start)."""
    if not 0 < len(command.description) <= DESCRIPTION_MAX:
        raise PluginError(f"{where}: its description is 1 to {DESCRIPTION_MAX} characters")
    if len(command.options) > OPTIONS_MAX:
        raise PluginError(f"{where}: at most {OPTIONS_MAX} options")
    names: set[str] = set()
    optional = False
    for option in command.options:
        what = f"{where}: option {option.name!r}"
        if not _OPTION_NAME.fullmatch(option.name) or option.name == "interaction":
            raise PluginError(f"{what}: its name must be 1-32 of a-z and _ (and not interaction)")
        if option.name in names:
            raise PluginError(f"{what} is given twice")
        names.add(option.name)
        if not 0 < len(option.description) <= DESCRIPTION_MAX:
            raise PluginError(f"{what}: its description is 1 to {DESCRIPTION_MAX} characters")
        if option.required and optional:
            raise PluginError(f"{what}: required options come before the optional ones")
        optional = optional or not option.required
        if option.choices is not None and not 0 < len(option.choices) <= CHOICES_MAX:
            raise PluginError(f"{what}: 1 to {CHOICES_MAX} choices")
        if option.choices is not None and option.type != "string":
            raise PluginError(f"{what}: only text options have choices")
        bounds = [b for b in (option.min, option.max) if b is not None]
        if bounds and option.type not in ("integer", "number"):
            raise PluginError(f"{what}: only numbers have a min and a max")
        if option.type == "integer" and not all(isinstance(b, int) for b in bounds):
            raise PluginError(f"{what}: the bounds of a whole number are whole numbers")
        if option.min is not None and option.max is not None and option.min > option.max:
            raise PluginError(f"{what}: its min is above its max")


def all_specs(plugins: Plugins) -> tuple[CommandSpec, ...]:
    """Every command, as the platforms register them: the plugins' commands (``/imagine`` first),
    genbot's member commands, then the admin commands."""
    return plugins.specs() + command_specs() + admin_specs(plugins.choosable_backends())


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
        return settings.plugins.validated(plugin.name, plugin.settings)
    except ConfigError as exc:
        raise PluginError(str(exc)) from None


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
            lines.append(f"  job kind {kind.name}: backend {', '.join(kind.lines)}")
        if plugin.settings is not None:
            for name, info in plugin.settings.model_fields.items():
                default = "required" if info.is_required() else f"default {info.default!r}"
                lines.append(f"  setting {_var(plugin.name, name)} ({default})")
    return "\n".join(lines)
