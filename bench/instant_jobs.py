"""The job of the worker and renderer benches (``bench/worker_drain.py``, ``bench/render_cpu.py``): a
plugin, loaded with ``GENBOT_PLUGINS__MODULES=bench.instant_jobs:plugin`` (or ``plugins.modules``).

``/instant text steps: 0`` queues a job that returns at once: what is left of a job's run is
genbot's own cost (the worker's claim, the row's transitions, the events, the result). With
``steps: N`` and ``step_ms: M`` it reports progress N times, M ms apart, as an image job does (the
renderer bench's jobs). The result is a short text, stored as any plugin's.
"""

from __future__ import annotations

import asyncio

from bot.api import Call, Command, Job, JobKind, JobRequest, Option, Plugin, TextResult

KIND = "instant"


def prepare(call: Call) -> JobRequest:
    return JobRequest(
        call.options["text"],
        {"steps": int(call.options.get("steps", 0)), "step_ms": int(call.options.get("step_ms", 0))},
    )


async def instant(job: Job) -> TextResult:
    steps = int(job.options["steps"])
    for step in range(1, steps + 1):
        await asyncio.sleep(int(job.options["step_ms"]) / 1000)
        await job.progress(step, steps)
    return TextResult("done")


plugin = Plugin(
    name=KIND,
    commands=(
        Command(
            KIND,
            "A job of the benches that returns at once (or after a few progress steps)",
            (
                Option("text", "string", "A label", required=True),
                Option("steps", "integer", "Progress reports before it returns (0)", min=0, max=100),
                Option("step_ms", "integer", "Milliseconds between two reports", min=0, max=10_000),
            ),
            job=KIND,
            prepare=prepare,
        ),
    ),
    jobs=(JobKind(KIND, instant, verb="Running"),),
)
