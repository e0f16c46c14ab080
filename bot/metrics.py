"""What a bot and a worker count, for Prometheus (``GENBOT_OPS__PORT``: ``GET /metrics``).

One registry per process (:data:`REGISTRY`); the counters and histograms are bumped where the
thing happens (the runner, the renderer, the sweep); the gauges of what Redis holds (the lines'
depths, the breakers) are read when Prometheus scrapes (:mod:`bot.ops`). Label values are few and
known: a job kind, a backend, a platform, an outcome (a state, or the error code of a failure).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

#: Seconds, for waits in line (a request to its start) and for runs (a start to the result).
WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)
RUN_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
LAG_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)

JOBS_FINISHED = Counter(
    "genbot_jobs_finished",
    "Jobs that ended, by kind, backend and outcome (succeeded, cancelled, or the error code)",
    ["kind", "backend", "outcome"],
    registry=REGISTRY,
)
JOB_WAIT = Histogram(
    "genbot_job_wait_seconds",
    "From a request to the start of its run, by backend",
    ["backend"],
    buckets=WAIT_BUCKETS,
    registry=REGISTRY,
)
JOB_RUN = Histogram(
    "genbot_job_run_seconds",
    "From the start of a run to its result, by backend",
    ["backend"],
    buckets=RUN_BUCKETS,
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "genbot_queue_depth", "Jobs waiting in a backend's line (read at scrape)", ["line"], registry=REGISTRY
)
BREAKER_OPEN = Gauge(
    "genbot_breaker_open",
    "1 while a backend's circuit breaker is open or half-open (read at scrape)",
    ["backend"],
    registry=REGISTRY,
)
PLATFORM_WRITES = Counter(
    "genbot_platform_writes",
    "Status messages posted or edited, by platform",
    ["platform", "action"],
    registry=REGISTRY,
)
PLATFORM_RATE_LIMITED = Counter(
    "genbot_platform_rate_limited",
    "Writes the platform answered with 429, by platform",
    ["platform"],
    registry=REGISTRY,
)
RENDER_LAG = Histogram(
    "genbot_render_lag_seconds",
    "From a job's change to the write that shows it, by platform",
    ["platform"],
    buckets=LAG_BUCKETS,
    registry=REGISTRY,
)
SWEEP_ACTIONS = Counter(
    "genbot_sweep_actions",
    "What the sweep did: queued rows put back in line (requeued), running jobs whose worker stopped"
    " beating taken over (failed_over) or, past their retries, failed (failed_stuck), rows of a"
    " backend no longer configured failed (failed_unserved)",
    ["action"],
    registry=REGISTRY,
)
