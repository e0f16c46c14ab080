"""The fault-injection harness: genbot as a deployment runs it (``genbot worker`` and ``genbot bot``
as OS processes) against a redis-server of the scenario's own and the run's PostgreSQL database,
with short failover, sweep and breaker settings so that every recovery happens within a test.

A scenario submits a batch of jobs as members do, injects its fault, then :meth:`Cluster.settle`
waits (polling, with generous deadlines) until every row is terminal and every status message shows
its row's final state, and counts the outcomes. A job is **lost** if its row never ends, or if its
member never sees how it ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from arq.constants import in_progress_key_prefix
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.embedded_redis import EmbeddedRedis
from bot.errors import describe
from bot.models import JOB_ID_PREFIX
from jobs.constants import Keys

ROOT = Path(__file__).resolve().parents[2]
GENBOT = [sys.executable, "-m", "bot.cli"]
URL_LINE = re.compile(r"genbot local chat: (http://\S+)")
PREFIX = "flt"
#: The line of the demo backend's jobs (the default backend here).
LINE = "demo"
TERMINAL = {"succeeded", "failed", "timed_out", "cancelled"}
#: How many jobs each scenario submits: small in ``make test``, bigger in ``make reliability``.
BATCH = int(os.environ.get("GENBOT_TEST_FAULT_BATCH", "6"))
#: Where ``make reliability`` collects the figures (a JSON line per scenario).
FIGURES_FILE = os.environ.get("GENBOT_TEST_FAULT_FIGURES")


@dataclass
class Figures:
    scenario: str
    fault: str
    submitted: int = 0
    completed: int = 0
    failed_right: int = 0  # failed, with the expected catalogue message shown to the member
    failed_wrong: int = 0
    lost: int = 0
    duplicated_tickets: int = 0  # rows sharing a ticket with another row
    duplicated_rows: int = 0  # rows beyond the first for one request
    fifo_violations: int = 0  # see fifo_violations()
    refused: dict[str, int] = field(default_factory=dict)  # requests answered with a catalogue refusal
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def record(self) -> None:
        if FIGURES_FILE:
            with open(FIGURES_FILE, "a") as out:
                out.write(json.dumps(asdict(self)) + "\n")


def fault_env(redis_url: str, db_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        "GENBOT_REDIS__URL": redis_url,
        "GENBOT_REDIS__KEY_PREFIX": PREFIX,
        "GENBOT_REDIS__QUEUE_NAME": f"{PREFIX}:queue",
        "GENBOT_DATABASE__URL": db_url,
        "GENBOT_BLOBS__DIR": str(tmp_path / "blobs"),
        "GENBOT_LOCAL__PORT": "0",
        "GENBOT_BACKEND__DEMO_STEP_DELAY_S": "0.15",
        "GENBOT_WORKER__JOB_TIMEOUT_S": "20",
        "GENBOT_WORKER__BACKEND_TIMEOUT_S": "15",
        "GENBOT_WORKER__BREAKER_RESET_S": "3",
        # Short, so that a dead worker's job runs again within a scenario; a run beats every
        # sixth of it, and a check waits out a gap (a database restart) before it takes over.
        "GENBOT_WORKER__FAILOVER_AFTER_S": "6",
        "GENBOT_WORKER__SWEEP_EVERY_MIN": "0.05",
        "GENBOT_WORKER__PROGRESS_INTERVAL_S": "0.3",
        "GENBOT_RENDERER__MIN_EDIT_INTERVAL_S": "0.2",
        "GENBOT_RENDERER__CLAIM_IDLE_S": "2",
        # Every job is Alice's: the per-member quotas would serialise and refuse them.
        "GENBOT_QUOTA__MAX_QUEUED": "1000",
        "GENBOT_QUOTA__MAX_RUNNING": "1000",
        "GENBOT_QUOTA__RATE_COUNT": "10000",
    }
    env.update(extra)
    return env


async def wait_until(
    predicate: Callable[[], Any], what: str, timeout: float = 60.0, every: float = 0.1
) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(every)


class Cluster:
    """The processes of one scenario; every one of them is stopped on :meth:`close`."""

    def __init__(self, tmp_path: Path, redis: EmbeddedRedis, db_url: str, **env: str) -> None:
        self.tmp_path = tmp_path
        self.redis = redis
        self.db_url = db_url
        self.env = fault_env(redis.url, db_url, tmp_path, **env)
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.logs: dict[str, Path] = {}
        self.base_url = ""
        self.submitted: list[str] = []  # prompts, one per job
        self.claim_log = ClaimLog(redis.url)

    async def start(self) -> None:
        """Watch the workers' claims (see :class:`ClaimLog`) before any process starts."""
        await self.claim_log.start()

    async def spawn(self, name: str, *args: str, **env: str) -> asyncio.subprocess.Process:
        log = self.tmp_path / f"{name}.log"
        with open(log, "ab") as out:
            proc = await asyncio.create_subprocess_exec(
                *GENBOT,
                *args,
                cwd=self.tmp_path,
                env={**os.environ, "PYTHONPATH": str(ROOT), **self.env, **env},
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        self.procs[name] = proc
        self.logs[name] = log
        return proc

    async def worker(self, name: str = "worker", **env: str) -> asyncio.subprocess.Process:
        """Start ``genbot worker``; returns once it is up (its first heartbeat is in Redis), so that
        a fault struck after this meets a running worker, not one still starting (a worker that
        cannot reach Redis at start-up says so and exits, by design)."""
        proc = await self.spawn(name, "worker", **env)
        beat = f"{socket.gethostname()}:{proc.pid}:"
        redis = Redis.from_url(self.redis.url, decode_responses=True)

        async def up() -> bool:
            assert proc.returncode is None, f"{name} exited at start-up:\n{self.log_tail()}"
            for line in await redis.keys(Keys(PREFIX).workers("*")):  # whatever its backend's line
                if any(m.startswith(beat) for m in await redis.zrange(line, 0, -1)):
                    return True
            return False

        try:
            await wait_until(up, f"{name} to start", 60)
        finally:
            await redis.aclose()
        return proc

    async def bot(self, **env: str) -> str:
        """Start ``genbot bot`` with the local chat; returns its base URL once it listens."""
        await self.spawn("bot", "bot", **env)

        def listening() -> str | None:
            match = URL_LINE.search(self.logs["bot"].read_text(errors="replace"))
            if match is None and self.procs["bot"].returncode is not None:
                raise AssertionError("the bot exited:\n" + self.logs["bot"].read_text(errors="replace"))
            return match.group(1) if match else None

        self.base_url = await wait_until(listening, "the bot to listen", 60)
        return self.base_url

    def alive(self, name: str) -> bool:
        return self.procs[name].returncode is None

    def assert_alive(self, *names: str) -> None:
        """Fail, with every process's last log lines, unless each named process still runs."""
        dead = [name for name in names if not self.alive(name)]
        assert not dead, f"exited: {dead}\n{self.log_tail()}"

    def signal(self, name: str, sig: signal.Signals) -> None:
        self.procs[name].send_signal(sig)

    async def close(self) -> None:
        await self.claim_log.stop()
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for name, log in self.logs.items():
            text = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {name} ---\n" + "\n".join(text))
        return "\n".join(out)

    # -- members ------------------------------------------------------------------------------

    async def imagine(self, http: aiohttp.ClientSession, prompt: str, steps: int = 8) -> dict[str, Any]:
        """``/imagine`` as Alice in the local chat; returns once its outcome shows (the chat answers
        before it runs a command): its status message, or a reply to Alice that refused it."""
        before = max((m["id"] for m in await self._alice_sees(http)), default=0)
        async with http.post(
            f"{self.base_url}/api/command",
            json={"user_id": "alice", "text": f"/imagine {prompt} steps: {steps}"},
        ) as resp:
            body = await resp.json()
        assert body == {"ok": True}, body
        self.submitted.append(prompt)

        async def outcome() -> dict[str, Any] | None:
            for m in await self._alice_sees(http):
                if m["id"] > before and (
                    (m["status"] and m["status"]["prompt"] == prompt)
                    or (m["ephemeral_to"] == "alice" and m["text"])
                ):
                    return m
            return None

        found: dict[str, Any] = await wait_until(outcome, f"the outcome of /imagine {prompt}", 120)
        return found

    async def _alice_sees(self, http: aiohttp.ClientSession) -> list[dict[str, Any]]:
        async with http.get(f"{self.base_url}/api/messages", params={"user_id": "alice"}) as resp:
            return list((await resp.json())["messages"])

    async def imagine_or_refusal(
        self, http: aiohttp.ClientSession, figures: Figures, prompt: str, steps: int = 8
    ) -> str | None:
        """``/imagine`` as Alice, one request at a time: None when it was queued, else the title of
        the refusal she was answered with (counted in ``figures.refused``; the request is then not
        expected to have a row)."""
        shown = await self.imagine(http, prompt, steps)
        if shown["status"]:
            return None
        title = str(shown["text"]).split(":", 1)[0]
        figures.refused[title] = figures.refused.get(title, 0) + 1
        self.submitted.remove(prompt)
        return title

    async def messages(self, http: aiohttp.ClientSession) -> dict[int, dict[str, Any]]:
        """The status of every job message Alice sees, by job id."""
        async with http.get(f"{self.base_url}/api/messages", params={"user_id": "alice"}) as resp:
            messages = (await resp.json())["messages"]
        return {m["status"]["job"]: m["status"] for m in messages if m.get("status")}

    # -- the truth ----------------------------------------------------------------------------

    async def rows(self) -> list[dict[str, Any]]:
        """Every generation row (a new connection each time: a scenario may kill connections)."""
        conn = await asyncpg.connect(self.db_url)
        try:
            records = await conn.fetch(
                "SELECT id, state, error_code, prompt, message::text AS message, meta::text AS meta, "
                "attempts, ticket, started_at FROM generations ORDER BY id"
            )
        finally:
            await conn.close()
        return [dict(r) for r in records]

    async def count(self, state: str) -> int:
        return sum(1 for r in await self.rows() if r["state"] == state)

    async def settle(
        self,
        figures: Figures,
        seen: Callable[[dict[str, Any]], Any],
        *,
        expected_failures: Iterable[str] = (),
        timeout: float = 180.0,
    ) -> Figures:
        """Wait until every row is terminal and ``seen(row)`` (what its member sees) agrees with it,
        or ``timeout``; then count. ``seen(row)`` returns what the member's message shows:
        ``(state, error title or None)``, or None when it cannot be read."""
        expected = set(expected_failures)
        started = time.monotonic()

        async def everything_ended() -> bool:
            rows = await self.rows()
            return len(rows) >= len(self.submitted) and all(r["state"] in TERMINAL for r in rows)

        async def everything_shown() -> bool:
            rows = await self.rows()
            return all([await _shows(r) for r in rows])

        async def _shows(row: dict[str, Any]) -> bool:
            shown = seen(row)
            if asyncio.iscoroutine(shown):
                shown = await shown
            return shown == (row["state"], title_of(row))

        with contextlib.suppress(AssertionError):
            await wait_until(everything_ended, "every job to end", timeout, every=0.25)
        with contextlib.suppress(AssertionError):
            await wait_until(everything_shown, "every message to show its job's end", 60, every=0.25)
        figures.seconds = round(time.monotonic() - started, 1)
        rows = await self.rows()
        figures.submitted = len(self.submitted)
        prompts = {r["prompt"] for r in rows}
        figures.lost += sum(1 for prompt in self.submitted if prompt not in prompts)
        figures.duplicated_rows = len(rows) - len(prompts)
        tickets = [r["ticket"] for r in rows if r["ticket"] is not None]
        figures.duplicated_tickets = len(tickets) - len(set(tickets))
        figures.fifo_violations = fifo_violations(rows, self.claim_log.claims)
        figures.details["jobs taken by a worker (seen by MONITOR)"] = len(set(self.claim_log.claims))
        for row in rows:
            shown = seen(row)
            if asyncio.iscoroutine(shown):
                shown = await shown
            if row["state"] not in TERMINAL or shown != (row["state"], title_of(row)):
                figures.lost += 1
            elif row["state"] == "succeeded":
                figures.completed += 1
            elif row["error_code"] in expected:
                figures.failed_right += 1
            else:
                figures.failed_wrong += 1
        codes: dict[str, int] = {}
        for row in rows:
            if row["error_code"]:
                codes[row["error_code"]] = codes.get(row["error_code"], 0) + 1
        figures.details.setdefault("error codes", codes)
        return figures


class ClaimLog:
    """The order in which workers took jobs, as Redis executed it: arq claims a job by setting
    its in-progress key (``PSETEX arq:in-progress:gen:<id>``; in genbot's workers inside the claim
    script, ``jobs.poll.CLAIM``), and ``MONITOR`` shows those in the order Redis ran them, whatever the clocks of the processes say.
    It reconnects when Redis restarts (claims made while it is away are not seen)."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.claims: list[int] = []
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen())
        await wait_until(self._listening.is_set, "MONITOR to listen", 10)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        prefix = in_progress_key_prefix + JOB_ID_PREFIX
        while True:
            client = Redis.from_url(self.redis_url, decode_responses=True)
            try:
                async with client.monitor() as monitor:
                    self._listening.set()
                    while True:
                        words = (await monitor.next_command())["command"].split(" ")
                        if words[0].upper() == "PSETEX" and words[1].startswith(prefix):
                            self.claims.append(int(words[1].removeprefix(prefix)))
            except (RedisError, OSError):
                await asyncio.sleep(0.05)  # Redis restarts: listen again once it is back
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await client.aclose()


def fifo_violations(rows: list[dict[str, Any]], claims: list[int]) -> int:
    """Pairs of jobs where the one with the higher ticket was taken by a worker first (by their
    first claims: a job run again after its worker died is claimed again, later). A job that was
    taken and whose row has no ticket counts as a violation too: a row that ran must say where it
    stood in line."""
    ticket = {r["id"]: r["ticket"] for r in rows}
    first: list[int] = []
    for job in claims:
        if job in ticket and job not in first:
            first.append(job)
    untold = sum(1 for job in first if ticket[job] is None)
    order = [ticket[job] for job in first if ticket[job] is not None]
    return untold + sum(1 for i, later in enumerate(order) for earlier in order[:i] if later < earlier)


def title_of(row: dict[str, Any]) -> str | None:
    if row["state"] in ("failed", "timed_out") or (row["state"] == "cancelled" and row["error_code"]):
        return describe(row["error_code"]).title
    return None


def local_seen(messages: dict[int, dict[str, Any]]) -> Callable[[dict[str, Any]], Any]:
    """``seen`` for the local chat, from a snapshot of Alice's messages (refresh it with
    :func:`refreshing_local_seen`)."""

    def seen(row: dict[str, Any]) -> tuple[str, str | None] | None:
        status = messages.get(row["id"])
        if status is None:
            return None
        return status["state"], (status["error"] or {}).get("title")

    return seen


def refreshing_local_seen(cluster: Cluster, http: aiohttp.ClientSession) -> Callable[[dict[str, Any]], Any]:
    """``seen`` for the local chat that reads Alice's messages again at most every 0.2 s."""
    cache: dict[str, Any] = {"at": 0.0, "messages": {}}

    async def seen(row: dict[str, Any]) -> tuple[str, str | None] | None:
        if time.monotonic() - cache["at"] > 0.2:
            with contextlib.suppress(aiohttp.ClientError):
                cache["messages"] = await cluster.messages(http)
            cache["at"] = time.monotonic()
        return local_seen(cache["messages"])(row)

    return seen
