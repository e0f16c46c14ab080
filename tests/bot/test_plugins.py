"""Finding and checking plugins: every way a plugin can be wrong stops start-up with one line
naming it, and the installed ones are found through their entry points."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.api import Command, JobKind, Option, Plugin, TextResult
from bot.app import plugins_of
from bot.config import load_settings
from bot.plugins import ENTRY_POINT_GROUP, PluginError, describe
from tests.cli import ROOT, run_genbot
from tests.plugin_path import on_path

ECHO = """
from pydantic import BaseModel, ConfigDict
from bot.api import Command, JobKind, Option, Plugin, TextResult

class EchoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    times: int = 1

async def echo(job):
    return TextResult(job.text * job.settings.times)

plugin = Plugin(
    name="echo",
    commands=(Command("echo", "Say it back", (Option("text", "string", "What", required=True),), job="echo"),),
    jobs=(JobKind("echo", echo),),
    settings=EchoSettings,
)
"""


async def _noop(job: object) -> TextResult:
    return TextResult("")


@pytest.fixture
def module_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder on ``sys.path`` for plugin modules written by a test."""
    with on_path(tmp_path, "plugin_*") as folder:
        yield folder


def write(folder: Path, name: str, source: str) -> None:
    (folder / f"{name}.py").write_text(textwrap.dedent(source))


def failure(**settings: object) -> str:
    with pytest.raises(PluginError) as caught:
        plugins_of(load_settings(_env_file=None, **settings))
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_plugin_named_in_the_settings_loads_with_its_settings_section(module_dir: Path) -> None:
    write(module_dir, "plugin_echo", ECHO)
    plugins = plugins_of(
        load_settings(_env_file=None, plugins={"modules": ["plugin_echo:plugin"], "echo": {"times": "3"}})
    )
    assert [p.plugin.name for p in plugins.loaded] == ["imagine", "echo"]
    command, loaded = plugins.commands["echo"]
    assert command.job == "echo" and loaded.settings.times == 3
    listing = describe(plugins)
    assert "/echo text:string  (queues echo) Say it back" in listing
    assert "setting GENBOT_PLUGINS__ECHO__TIMES (default 1)" in listing


def test_installed_plugins_are_found_through_their_entry_points(module_dir: Path) -> None:
    """An installed distribution (its ``.dist-info`` on the path) that declares the entry point."""
    write(module_dir, "plugin_echo", ECHO)
    info = module_dir / "genbot_echo-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: genbot-echo\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\necho = plugin_echo:plugin\n")
    plugins = plugins_of(load_settings(_env_file=None))
    [echo] = [p for p in plugins.loaded if p.plugin.name == "echo"]
    assert (echo.source, echo.target) == ("entry point 'echo'", "plugin_echo:plugin")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "raise RuntimeError('no GPU')",
            "plugin plugin_bad:plugin (GENBOT_PLUGINS__MODULES) failed to load: RuntimeError: no GPU",
        ),
        ("plugin = 42", "plugin plugin_bad:plugin (GENBOT_PLUGINS__MODULES) is not a bot.api.Plugin"),
        (
            "from bot.api import Plugin\nplugin = Plugin(name='Bad Name')",
            "plugin 'Bad Name' (GENBOT_PLUGINS__MODULES plugin_bad:plugin): its name must be lowercase",
        ),
        (
            "from bot.api import Plugin\nplugin = Plugin(name='imagine')",
            "plugin 'imagine' (GENBOT_PLUGINS__MODULES plugin_bad:plugin): another plugin of that name",
        ),
        (
            "from bot.api import Command, Plugin\n"
            "async def run(call): return ''\n"
            "plugin = Plugin(name='bad', commands=(Command('queue', 'mine', run=run),))",
            "plugin 'bad' (GENBOT_PLUGINS__MODULES plugin_bad:plugin): the command /queue exists already",
        ),
        (
            "from bot.api import Command, Plugin\n"
            "plugin = Plugin(name='bad', commands=(Command('draw', 'Draw', job='painting'),))",
            "plugin 'bad' (GENBOT_PLUGINS__MODULES plugin_bad:plugin): /draw queues job kind 'painting', "
            "which no plugin defines",
        ),
    ],
)
def test_a_plugin_that_cannot_load_stops_start_up_with_one_line_naming_it(
    module_dir: Path, source: str, expected: str
) -> None:
    write(module_dir, "plugin_bad", source)
    assert failure(plugins={"modules": ["plugin_bad:plugin"]}).startswith(expected)


@pytest.mark.parametrize(
    ("plugin", "expected"),
    [
        (
            "Plugin(name='modules')",
            "its name must be lowercase letters, digits and _, at most 32, and not modules",
        ),
        (
            "Plugin(name='bad', jobs=(JobKind('k' * 33, run),))",
            "job kind 'kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk' must be lowercase letters, digits and _, at most 32",
        ),
        ("Plugin(name='bad', jobs=(JobKind('k', run), JobKind('k', run)))", "job kind 'k' is defined twice"),
        (
            "Plugin(name='bad', jobs=(JobKind('k', run, backend='b' * 101),))",
            "job kind 'k': its backend names are 1 to 100 characters",
        ),
        (
            "Plugin(name='bad', jobs=(JobKind('k', run, backend='a', backends=('b', 'c')),))",
            "job kind 'k': its backends lack its backend 'a'",
        ),
        ("Plugin(name='bad', commands=(Command('admin', 'A', run=answer),))", "command 'admin' must be 1-32"),
        ("Plugin(name='bad', commands=(Command('help', 'A', run=answer),))", "command 'help' must be 1-32"),
        (
            "Plugin(name='bad', commands=(Command('ban', 'Mine', run=answer, admin=True),))",
            "the command /admin ban exists already",
        ),
        (
            "Plugin(name='bad', commands=(Command('c', 'A', (Option('a b', 'string', 'A'),), run=answer),))",
            "/c: option 'a b': its name must be 1-32 of a-z and _",
        ),
        (
            "Plugin(name='bad', commands=(Command('c', 'A', (Option('a', 'string', 'A'),) * 2, run=answer),))",
            "/c: option 'a' is given twice",
        ),
        (
            "Plugin(name='bad', commands=(Command('c', 'A', (Option('a', 'string', 'A'), "
            "Option('b', 'string', 'B', required=True)), run=answer),))",
            "/c: option 'b': required options come before the optional ones",
        ),
        (
            "Plugin(name='bad', commands=(Command('c', 'A', (Option('a', 'integer', 'A', min=0.5),), run=answer),))",
            "/c: option 'a': the bounds of a whole number are whole numbers",
        ),
        (
            "Plugin(name='bad', commands=(Command('c', 'x' * 101, run=answer),))",
            "/c: its description is 1 to 100",
        ),
    ],
)
def test_a_plugin_spec_that_a_platform_would_refuse_is_named_at_start(
    module_dir: Path, plugin: str, expected: str
) -> None:
    source = (
        "from bot.api import Command, JobKind, Option, Plugin, TextResult\n"
        "async def run(job): return TextResult('')\n"
        "async def answer(call): return 'hi'\n"
        f"plugin = {plugin}\n"
    )
    write(module_dir, "plugin_spec", source)
    message = failure(plugins={"modules": ["plugin_spec:plugin"]})
    assert expected in message, message


def test_a_missing_plugin_module_is_named(module_dir: Path) -> None:
    assert failure(plugins={"modules": ["plugin_nowhere:plugin"]}) == (
        "plugin plugin_nowhere:plugin (GENBOT_PLUGINS__MODULES) failed to load: "
        "ModuleNotFoundError: No module named 'plugin_nowhere'"
    )


def test_a_plugin_s_settings_are_checked_by_its_model_and_named(module_dir: Path) -> None:
    write(module_dir, "plugin_echo", ECHO)
    modules = ["plugin_echo:plugin"]
    assert failure(plugins={"modules": modules, "echo": {"tims": "3"}}) == (
        "GENBOT_PLUGINS__ECHO__TIMS: is not a setting of it (plugin 'echo')"
    )
    assert failure(plugins={"modules": modules, "echo": {"times": "many"}}).startswith(
        "GENBOT_PLUGINS__ECHO__TIMES: Input should be a valid integer"
    )
    assert failure(plugins={"modules": modules, "ecko": {"times": "3"}}) == (
        "GENBOT_PLUGINS__ECKO__*: no loaded plugin is called 'ecko' (loaded: echo, imagine)"
    )


def test_plugin_option_types_are_checked_as_the_plugin_is_written() -> None:
    with pytest.raises(ValueError, match="type 'file' is not one of"):
        Option("photo", "file", "A photo")
    kind = JobKind("noop", _noop)
    assert Plugin("noop", (Command("noop", "Nothing", job="noop"),), (kind,)).jobs == (kind,)


async def test_genbot_plugins_lists_what_is_loaded(tmp_path: Path) -> None:
    env = {
        "PYTHONPATH": f"{ROOT}:{ROOT / 'examples' / 'ask'}",
        "GENBOT_PLUGINS__MODULES": "genbot_ask:plugin",
        "GENBOT_PLUGINS__ASK__WORD_DELAY_S": "0.5",
    }
    listed = await run_genbot("plugins", cwd=tmp_path, env=env)
    assert listed.code == 0, listed.stderr
    assert "ask  (GENBOT_PLUGINS__MODULES: genbot_ask:plugin)" in listed.stdout
    assert "/ask prompt:string  (queues ask)" in listed.stdout
    assert "/imagine prompt:string [negative:string]" in listed.stdout
    broken = await run_genbot("plugins", cwd=tmp_path, env={**env, "GENBOT_PLUGINS__ASK__WORD_DELAY": "1"})
    assert broken.code == 2
    assert (
        broken.one_line() == "genbot: GENBOT_PLUGINS__ASK__WORD_DELAY: is not a setting of it (plugin 'ask')"
    )
