"""What an operator asks a bot or a worker over HTTP (``GENBOT_OPS__PORT``): ``/healthz`` (the
process answers), ``/readyz`` (each check: Redis, the database, the platform session of a bot, the
breakers of the lines a worker serves; 503 naming the ones that fail) and ``/metrics`` (Prometheus's
text format, :mod:`bot.metrics`). Checks run at once, each within :data:`CHECK_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.logs import redact
from bot.metrics import REGISTRY

log = logging.getLogger(__name__)

#: The most one readiness check may take.
CHECK_TIMEOUT_S = 2.0
#: A check: returns when all is well, raises (its message says what is wrong) when not.
Check = Callable[[], Awaitable[object]]


class Ops:
    def __init__(
        self, checks: Mapping[str, Check], refresh: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        self.checks = dict(checks)
        self.refresh = refresh

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, _request: web.Request) -> web.Response:
        names = list(self.checks)
        results = await asyncio.gather(*(self._check(self.checks[name]) for name in names))
        checks = dict(zip(names, results, strict=True))
        ready = all(result == "ok" for result in results)
        return web.json_response(
            {"status": "ready" if ready else "not ready", "checks": checks}, status=200 if ready else 503
        )

    @staticmethod
    async def _check(check: Check) -> str:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                await check()
        except TimeoutError:
            return f"no answer within {CHECK_TIMEOUT_S:g} s"
        except Exception as exc:  # what is wrong, in a few words: never a traceback
            return redact(str(exc) or type(exc).__name__)[:200]
        return "ok"

    async def _metrics(self, _request: web.Request) -> web.Response:
        if self.refresh is not None:
            try:
                async with asyncio.timeout(CHECK_TIMEOUT_S):
                    await self.refresh()
            except Exception:  # the counters still go out; the gauges keep their last values
                log.warning("reading the queue for the metrics failed", exc_info=True)
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def serve(ops: Ops, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Listen on ``host:port`` (0: a free port); the runner (to clean up) and the port."""
    runner = web.AppRunner(ops.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound: int = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, bound
