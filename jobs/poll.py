"""How a worker finds the next job of its line: in the line's waiting set, not in arq's queue.

arq's poll reads the first ``queue_read_limit`` ids of its queue sorted set, by score, and tries to
claim each one (``WATCH`` the in-progress key, ``EXISTS``, ``ZSCORE``, then ``MULTI``/``PSETEX``).
But a job stays in arq's queue while it runs, and genbot's scores are tickets, so the running jobs
are the head of the queue: with more of them than the read limit an idle worker sees no waiting job
at all, and below it every poll of every idle worker pays several round trips per running job
(1,112 commands/s from one idle worker with 60 jobs running elsewhere).

genbot's worker of a line reads instead, in one script (:data:`READ`), what a worker may start,
in ticket order:

- the head of the line's **waiting set** (:meth:`jobs.constants.Keys.waiting`), which holds only
  jobs that wait (a job leaves it as it starts: ``RedisJobQueue.start``), less those a worker has
  claimed already (a job waiting for the circuit breaker keeps its place in the waiting set, and
  the instant between a claim and the start) and those without an arq job (Redis lost it: the
  sweep gives it back);
- now and then (every :data:`ORPHANS_EVERY_S`, by one worker of the line: whichever polls first
  once the line's :meth:`~jobs.constants.Keys.orphan_read` key expired) also the jobs of arq's
  queue that no worker holds and whose ticket comes before the first job found above: **orphans**,
  in arq's queue but in no waiting set. genbot leaves one there when a run ends without its
  worker: the worker died and arq's in-progress key expired before the sweep took the run over,
  or a worker stopped and could not put its job back in line. arq runs such a job again, and so
  does genbot (the runner finds its row ``running`` and claims the run again); only this rarer
  read finds it. (The sweep's failover puts a taken-over job back in the waiting set: that one
  is no orphan.) An orphan waits at most :data:`ORPHANS_EVERY_S` more, beside the failover time
  (``worker.failover_after_s``) or arq's in-progress timeout that made it one.

The claim is arq's (``Worker.start_jobs``), made one script (:data:`CLAIM`, :func:`start_jobs`):
arq claims a job with four round trips (``WATCH`` its in-progress key, ``EXISTS`` it, ``ZSCORE``
the job, then ``MULTI``/``PSETEX``/``EXEC``, which fails if another worker set the key meanwhile);
the script makes the same checks and the same write in one atomic step, so of the workers that read
the same head one wins each job, as before. A poll costs a constant number of round trips however
many jobs run: one ``EVALSHA`` for the read, arq's abort check, and one claim per job it starts (or
loses to a faster worker). Inside the script, the work is the head
of the waiting set (and the claimed jobs at its head, at most the line's capacity), and, in the
orphan read (one per line every :data:`ORPHANS_EVERY_S`, whatever the number of workers), the
line's running jobs.

Relies on arq 0.28's worker internals (``_poll_iteration``, ``start_jobs``, ``job_counter``,
``max_jobs``, ``queue_read_limit``, ``_jobs_started``, ``_cancel_aborted_jobs``, ``tasks``,
``heart_beat``, ``sem``, ``in_progress_timeout_s``, ``run_job``, ``loop``,
``_release_sem_dec_counter_on_complete``): :func:`poll_iteration` is arq 0.28's
``Worker._poll_iteration`` with its read replaced, :func:`start_jobs` its ``Worker.start_jobs``
with its claim made one script. ``pyproject.toml`` pins ``arq>=0.28,<0.29``; check this module
against the next release.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from arq.worker import Worker
from redis.exceptions import ResponseError

from bot.models import JOB_ID_PREFIX

log = logging.getLogger(__name__)

#: How often one worker of a line also looks for orphans in arq's queue (see the module docstring),
#: in seconds.
ORPHANS_EVERY_S = 5.0
#: The most entries of the waiting set one read looks at (past the claimed ones at its head): the
#: line's capacity, and far more than the jobs a poll can start.
SCAN_MAX = 1000
#: The most entries of arq's queue ahead of the first waiting job one orphan read looks at.
ORPHAN_SCAN_MAX = 10_000

# KEYS: the line's waiting set, the line's arq queue, the line's orphan-read key
# ARGV: how many job ids to return; arq's in-progress key prefix; the arq job id prefix of genbot
#       jobs; the most waiting entries to look at; ms between two orphan reads of the line; the
#       most entries of arq's queue to look at for orphans; now (ms: arq starts no job scored later)
# Returns arq job ids a worker may claim, in ticket order: the orphans ahead of the first waiting
# job found (when this read is the line's orphan read), then the waiting jobs that no worker
# holds and that have an arq job.
READ = """
local want = tonumber(ARGV[1])
local now = tonumber(ARGV[7])
local found = {}
local head = nil
local start = 0
local scan = tonumber(ARGV[4])
while #found < want and start < scan do
    local page = redis.call('ZRANGE', KEYS[1], start, start + 99)
    if #page == 0 then break end
    for _, id in ipairs(page) do
        local job = ARGV[3] .. id
        local score = redis.call('ZSCORE', KEYS[2], job)
        if score and tonumber(score) <= now and redis.call('EXISTS', ARGV[2] .. job) == 0 then
            head = head or score
            table.insert(found, job)
            if #found == want then break end
        end
    end
    start = start + #page
end
if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[5]) then return found end
local below = head and ('(' .. head) or ARGV[7]
local jobs = {}
for _, job in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', below, 'LIMIT', 0, tonumber(ARGV[6]))) do
    if #jobs == want then break end
    if redis.call('EXISTS', ARGV[2] .. job) == 0 then table.insert(jobs, job) end
end
for _, job in ipairs(found) do
    if #jobs == want then break end
    table.insert(jobs, job)
end
return jobs
"""


# KEYS: the job's arq in-progress key, the arq queue. ARGV: the arq job id, now (ms), arq's
# in-progress timeout (ms). arq's claim (``Worker.start_jobs``) in one atomic step: a job already
# claimed (its in-progress key exists), gone from the queue, scored 0 or scored later than now is not
# claimed (false); else its in-progress key is set as arq sets it (``PSETEX``), and its score returned.
CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) == 0 or tonumber(score) > tonumber(ARGV[2]) then return false end
redis.call('PSETEX', KEYS[1], ARGV[3], '1')
return score
"""


class LineRead:
    """The read of one line's workers (see the module docstring); ``orphans_every_s``: how often
    one of them also looks for orphans."""

    def __init__(
        self,
        redis: ArqRedis,
        *,
        waiting_key: str,
        queue_name: str,
        orphan_read_key: str,
        orphans_every_s: float = ORPHANS_EVERY_S,
    ) -> None:
        self.keys = [waiting_key, queue_name, orphan_read_key]
        self.orphans_every_ms = max(1, int(orphans_every_s * 1000))
        self._read = redis.register_script(READ)

    async def __call__(self, count: int) -> list[bytes]:
        """Up to ``count`` arq job ids that a worker may claim now, first first. One round trip."""
        ids: list[bytes] = await self._read(
            keys=self.keys,
            args=[
                count,
                in_progress_key_prefix,
                JOB_ID_PREFIX,
                SCAN_MAX,
                self.orphans_every_ms,
                ORPHAN_SCAN_MAX,
                int(time.time() * 1000),
            ],
        )
        return ids


async def start_jobs(worker: Worker, claim: Any, job_ids: list[bytes]) -> None:
    """arq 0.28's ``Worker.start_jobs`` with its claim made one script (``claim``: :data:`CLAIM`
    registered on the worker's pool): for each job id, take a slot, claim the job, start it in a
    task. A job that is not claimed (another worker has it, or it is gone) gives its slot back."""
    w: Any = worker  # arq's worker internals are untyped
    for job_id_b in job_ids:
        await w.sem.acquire()
        if w.job_counter >= w.max_jobs:
            w.sem.release()
            return
        w.job_counter = w.job_counter + 1
        job_id = job_id_b.decode()
        try:
            score = await claim(
                keys=[in_progress_key_prefix + job_id, w.queue_name],
                args=[job_id, timestamp_ms(), int(w.in_progress_timeout_s * 1000)],
            )
        except ResponseError:  # as arq's claim: the job is not this worker's
            score = None
        if score is None:
            w.job_counter = w.job_counter - 1
            w.sem.release()
            log.debug("job %s already running elsewhere", job_id)
            continue
        task = w.loop.create_task(w.run_job(job_id, int(float(score))))
        task.add_done_callback(lambda _: w._release_sem_dec_counter_on_complete())
        w.tasks[job_id] = task


async def poll_iteration(worker: Worker, read: LineRead) -> None:
    """arq 0.28's ``Worker._poll_iteration``, reading the job ids with ``read`` instead of the
    head of arq's queue: claim what it finds (arq's ``start_jobs``), cancel aborted jobs, drop
    the finished tasks, beat arq's health check."""
    w: Any = worker  # arq's worker internals are untyped
    count: int = w.queue_read_limit
    if w.burst and w.max_burst_jobs >= 0:
        burst_jobs_remaining = w.max_burst_jobs - w._jobs_started()
        if burst_jobs_remaining < 1:
            return
        count = min(burst_jobs_remaining, count)
    if w.allow_pick_jobs and w.job_counter < w.max_jobs:
        await w.start_jobs(await read(count))

    if w.allow_abort_jobs:
        await w._cancel_aborted_jobs()

    for job_id, task in list(w.tasks.items()):
        if task.done():
            del w.tasks[job_id]
            # as arq does: an error of run_job itself is raised here
            task.result()

    await w.heart_beat()
