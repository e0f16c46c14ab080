"""The real processes: ``genbot dev`` as a user runs it, and ``genbot migrate / worker / bot`` as a
deployment runs them, each a separate OS process."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from bot.embedded_redis import EmbeddedRedis
from tests.conftest import truncate_pg
from tests.jobs.fake_a1111 import FakeA1111
from tests.jobs.fake_comfyui import FakeComfyUI
from tests.s3_server import Bucket

GENBOT = [sys.executable, "-m", "bot.cli"]
ROOT = Path(__file__).resolve().parents[2]
URL_LINE = re.compile(rb"genbot local chat: (http://\S+)")


async def spawn(*args: str, cwd: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *GENBOT,
        *args,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def read_url(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    seen = b""
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        seen += line
        if not line:
            raise AssertionError(f"exited before listening:\n{seen.decode(errors='replace')}")
        if match := URL_LINE.search(line):
            # keep draining the pipe so the process never blocks on a full one
            asyncio.get_running_loop().create_task(proc.stdout.read())
            return match.group(1).decode()


async def stop(proc: asyncio.subprocess.Process, sig: signal.Signals) -> int:
    proc.send_signal(sig)
    return await asyncio.wait_for(proc.wait(), 30)


async def imagine_until_done(base: str, prompt: str) -> dict[str, object]:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{base}/api/command", json={"user_id": "alice", "text": f"/imagine {prompt} steps: 4"}
        ) as resp:
            assert (await resp.json()) == {"ok": True}
        for _ in range(300):
            async with http.get(f"{base}/api/messages", params={"user_id": "alice"}) as resp:
                messages = (await resp.json())["messages"]
            done = [
                m
                for m in messages
                if m["status"] and m["status"]["prompt"] == prompt and m["status"]["state"] == "succeeded"
            ]
            if done:
                async with http.get(base + done[0]["status"]["image_url"]) as image:
                    assert image.status == 200
                    assert (await image.read())[:8] == b"\x89PNG\r\n\x1a\n"
                return dict(done[0])
            await asyncio.sleep(0.1)
    raise AssertionError("the job did not finish")


async def test_genbot_dev_runs_everything_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    proc = await spawn("dev", "--port", "0", cwd=tmp_path, env={"GENBOT_BACKEND__DEMO_STEP_DELAY_S": "0.02"})
    try:
        base = await read_url(proc)
        assert base.startswith("http://127.0.0.1:")
        await imagine_until_done(base, "a red fox in snow")
    finally:
        code = await stop(proc, signal.SIGINT)
    assert code == 0
    assert (tmp_path / "data" / "genbot.sqlite3").exists()
    assert list((tmp_path / "data" / "blobs" / "results").glob("*.png"))

    # The chat history survives a restart.
    proc = await spawn("dev", "--port", "0", cwd=tmp_path, env={})
    try:
        base = await read_url(proc)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{base}/api/messages", params={"user_id": "alice"}) as resp,
        ):
            messages = (await resp.json())["messages"]
        assert [m["status"]["state"] for m in messages if m["status"]] == ["succeeded"]
    finally:
        assert await stop(proc, signal.SIGTERM) == 0


async def test_genbot_dev_serves_health_and_metrics_and_logs_json(tmp_path: Path) -> None:
    """``GENBOT_OPS__PORT`` and ``GENBOT_LOG_FORMAT=json`` on the real command: every log line is a
    JSON object, one of them says where the health and metrics are, and they answer."""
    env = {"GENBOT_OPS__PORT": "0", "GENBOT_LOG_FORMAT": "json", "GENBOT_BACKEND__DEMO_STEP_DELAY_S": "0.02"}
    proc = await spawn("dev", "--port", "0", cwd=tmp_path, env=env)
    assert proc.stdout is not None
    logged: list[dict[str, object]] = []
    try:
        while True:
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            assert line, "exited before listening"
            if line.startswith("genbot local chat: "):
                base = line.split(": ", 1)[1].strip()
                break
            logged.append(json.loads(line))  # every log line is JSON
        drain = asyncio.get_running_loop().create_task(proc.stdout.read())
        (where,) = [str(r["message"]) for r in logged if "health and metrics on" in str(r["message"])]
        ops = re.search(r"http://\S+:\d+", where)
        assert ops is not None
        await imagine_until_done(base, "a fox for the metrics")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{ops.group(0)}/readyz") as resp:
                ready = (resp.status, await resp.json())
            async with http.get(f"{ops.group(0)}/metrics") as resp:
                metrics = await resp.text()
    finally:
        code = await stop(proc, signal.SIGINT)
    await drain
    assert code == 0
    assert ready == (
        200,
        {
            "status": "ready",
            "checks": {"redis": "ok", "database": "ok", "platform": "ok", "breaker demo": "ok"},
        },
    )
    assert 'genbot_jobs_finished_total{backend="demo",kind="imagine",outcome="succeeded"} 1.0' in metrics
    assert all({"time", "level", "logger", "message", "job", "platform"} <= r.keys() for r in logged)


@pytest.mark.parametrize("service", ["a1111", "comfyui"])
async def test_genbot_dev_draws_with_an_image_service_given_two_settings(
    tmp_path: Path, service: str
) -> None:
    """What the README promises: ``genbot dev`` pointed at AUTOMATIC1111 or ComfyUI with the
    backend's name and the service's address, nothing else (here the fakes that speak their API)."""
    fake: FakeA1111 | FakeComfyUI = FakeA1111() if service == "a1111" else FakeComfyUI()
    url = await fake.start()
    env = {"GENBOT_BACKEND__NAME": service, f"GENBOT_BACKENDS__{service.upper()}__URL": url}
    proc = await spawn("dev", "--port", "0", cwd=tmp_path, env=env)
    try:
        base = await read_url(proc)
        await imagine_until_done(base, "a fox from the service")
    finally:
        code = await stop(proc, signal.SIGINT)
        await fake.stop()
    assert code == 0
    if isinstance(fake, FakeA1111):
        assert [body["prompt"] for body in fake.called("/sdapi/v1/txt2img")] == ["a fox from the service"]
    else:
        (sent,) = fake.prompts()
        assert sent["prompt"]["6"]["inputs"]["text"] == "a fox from the service"


@pytest_asyncio.fixture
async def deployment_env(
    redis_server: EmbeddedRedis, postgres_url: str, tmp_path: Path
) -> AsyncIterator[dict[str, str]]:
    await truncate_pg(postgres_url)  # what earlier tests left (a paused workspace, say) must not leak in
    yield {
        "GENBOT_REDIS__URL": redis_server.url,
        "GENBOT_REDIS__KEY_PREFIX": f"dep{os.getpid()}",
        "GENBOT_REDIS__QUEUE_NAME": f"dep{os.getpid()}:queue",
        "GENBOT_DATABASE__URL": postgres_url,
        "GENBOT_LOCAL__PORT": "0",
        "GENBOT_BACKEND__DEMO_STEP_DELAY_S": "0.02",
    }


@pytest.mark.postgres
@pytest.mark.parametrize("blobs", ["database", "s3"])
async def test_migrate_worker_and_bot_as_separate_processes_on_postgres(
    deployment_env: dict[str, str], tmp_path: Path, blobs: str, request: pytest.FixtureRequest
) -> None:
    """As on two hosts: the worker and the bot share no folder (each its own working directory,
    each its own ``data/blobs``), only Redis and PostgreSQL, and the blob store that carries the
    previews and the image from the worker to the bot: PostgreSQL's ``blobs`` table, or an S3
    bucket."""
    bucket = await Bucket.new(request.getfixturevalue("s3_server")) if blobs == "s3" else None
    if bucket is not None:
        deployment_env = {**deployment_env, **bucket.env()}
    worker_host, bot_host = tmp_path / "worker-host", tmp_path / "bot-host"
    worker_host.mkdir()
    bot_host.mkdir()
    migrate = await spawn("migrate", cwd=bot_host, env=deployment_env)
    out, _ = await asyncio.wait_for(migrate.communicate(), 60)
    assert migrate.returncode == 0, out.decode()
    worker = await spawn("worker", cwd=worker_host, env=deployment_env)
    bot = await spawn("bot", cwd=bot_host, env=deployment_env)
    try:
        base = await read_url(bot)
        await imagine_until_done(base, "a blue whale")  # the image, served by the bot
    finally:
        codes = [await stop(bot, signal.SIGTERM), await stop(worker, signal.SIGTERM)]
    assert codes == [0, 0]
    assert not (worker_host / "data").exists() and not (bot_host / "data").exists(), "no folder shared"
    if bucket is not None:
        assert [key for key in await bucket.keys() if key.startswith("genbot/results/")]


async def test_a_bad_setting_stops_start_up_naming_the_variable(tmp_path: Path) -> None:
    proc = await spawn("bot", cwd=tmp_path, env={"GENBOT_RENDERER__BATCH": "lots"})
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert b"GENBOT_RENDERER__BATCH" in out
    assert b"Traceback" not in out
