"""docs/plugins.md, "Write your first plugin", as a reader follows it: its module and its
``pyproject.toml`` written out as they are on the page, installed (a ``.dist-info`` with the entry
point the ``pyproject.toml`` declares), then its commands used in the local chat."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from bot.app import plugins_of, runtime
from bot.config import load_settings
from bot.embedded_redis import EmbeddedRedis
from bot.plugins import ENTRY_POINT_GROUP
from tests.chat_client import ChatClient
from tests.cli import ROOT
from tests.conftest import make_settings
from tests.plugin_path import on_path
from tests.stack import stack_running

GUIDE = ROOT / "docs" / "plugins.md"


def block(language: str, after: str) -> str:
    """The first ``language`` code block of the guide after the line containing ``after``."""
    text = GUIDE.read_text()
    start = text.index(after)
    found = re.compile(rf"```{language}\n(.*?)```", re.DOTALL).search(text, start)
    assert found is not None, f"no {language} block after {after!r}"
    return found.group(1)


@pytest.fixture
def installed(tmp_path: Path) -> Iterator[None]:
    """The guide's package, as ``pip install -e`` would leave it: importable, with its entry point."""
    site = tmp_path / "site"
    (site / "genbot_reverse").mkdir(parents=True)
    (site / "genbot_reverse" / "__init__.py").write_text(block("python", "`genbot_reverse/__init__.py`"))
    project = tomllib.loads(block("toml", "`pyproject.toml`, next to"))["project"]
    points = project["entry-points"][ENTRY_POINT_GROUP]
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    lines = "".join(f"{name} = {target}\n" for name, target in points.items())
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")
    with on_path(site, "genbot_reverse"):
        yield


def test_the_guide_s_plugin_is_found_as_installed(installed: None) -> None:
    plugins = plugins_of(load_settings(_env_file=None))
    assert [p.plugin.name for p in plugins.loaded] == ["imagine", "reverse"]
    assert plugins.loaded[1].source == "entry point 'reverse'"


async def test_the_guide_s_commands_work_in_the_local_chat(
    installed: None, redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path
) -> None:
    settings = make_settings(
        redis_server.url, sqlite_url, tmp_path, plugins={"reverse": {"letter_delay_s": "0.2"}}
    )
    async with runtime(settings) as rt, stack_running(rt) as base, aiohttp.ClientSession() as http:
        alice = ChatClient(http, base, "alice")
        await alice.connect()
        assert await alice.command("/reverse a red fox shout: yes") == {"ok": True}
        done = await alice.wait_for(
            lambda m: bool(m.get("status")) and m["status"]["state"] == "succeeded", timeout=30
        )
        assert await alice.command("/letters hello") == {"ok": True}
        answer = await alice.wait_for(lambda m: "letters" in (m.get("text") or ""), timeout=10)
        assert await alice.command("/reverse " + "x" * 201) == {"ok": True}
        refused = await alice.wait_for(lambda m: "at most 200" in (m.get("text") or ""), timeout=10)
        await alice.close()
    status = done["status"]
    assert (status["text"], status["details"]) == ("XOF DER A", f"shouting · job {status['job']}")
    updates = [u["status"] for u in alice.updates if u.get("status") and u["status"]["job"] == status["job"]]
    assert any(u["headline"].startswith("Reversing · ") for u in updates)
    assert answer["text"] == "'hello' has 5 letters." and answer["ephemeral_to"] == "alice"
    assert refused["ephemeral_to"] == "alice"
