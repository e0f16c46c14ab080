"""The fleet simulation (``bench/fleet.py``): its counting, its refusal without root, and a small run
(two hosts in network namespaces, eight jobs, a worker killed mid-job) where root allows it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bench.fleet import duplicates, fifo_violations

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def row(ticket: int | None, started_s: float | None) -> dict[str, object]:
    return {"ticket": ticket, "started_at": None if started_s is None else T0 + timedelta(seconds=started_s)}


def test_fifo_counts_a_job_that_overtook_an_earlier_ticket_by_the_fleets_slots_or_more() -> None:
    in_order = [row(t, t) for t in range(1, 9)]
    assert fifo_violations(in_order, window=2) == (0, 0)
    # 2 and 3 started together on two workers and wrote their starts the other way round: jitter.
    jitter = [row(1, 0), row(2, 1.01), row(3, 1.0), row(4, 2)]
    assert fifo_violations(jitter, window=2) == (0, 1)
    # 5 started before 1, four tickets ahead of it, with two slots: a violation.
    overtaken = [row(1, 3), row(2, 1), row(3, 2), row(5, 0.5)]
    violations, _ = fifo_violations(overtaken, window=2)
    assert violations == 2  # 3 (two ahead of 1) and 5 (four ahead)
    # A job that ran without a ticket cannot say where it stood: a violation; one not started is not.
    assert fifo_violations([row(None, 1), row(1, 0), row(2, None)], window=1) == (1, 0)


def test_duplicates_count_runs_beyond_one_per_job_unless_caused_on_purpose() -> None:
    runs = [
        {"job": job, "event": event} for job, event in [(1, "start"), (1, "end"), (2, "start"), (2, "start")]
    ]
    assert duplicates(runs) == 1
    assert duplicates(runs, Counter({2: 2})) == 0
    assert duplicates([*runs, {"job": 2, "event": "start"}], Counter({2: 2})) == 1


def _as_nobody() -> list[str] | None:
    """A command prefix running as an unprivileged user, or None when that cannot run this Python."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    probe = subprocess.run(
        [*prefix, sys.executable, "-c", "import bench.fleet"], cwd=ROOT, capture_output=True
    )
    return prefix if probe.returncode == 0 else None


def test_without_root_it_says_what_it_needs_and_exits_2() -> None:
    prefix = _as_nobody()
    if prefix is None:
        pytest.skip(
            "an unprivileged user cannot import bench.fleet here (Python or the venv is not readable to it)"
        )
    done = subprocess.run(
        [*prefix, sys.executable, "-m", "bench.fleet", "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "needs root" in done.stderr
    assert "network namespaces" in done.stderr


def _namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in listed.splitlines() if line.strip()}


def test_a_fleet_of_two_drains_in_order_and_takes_over_a_killed_workers_job(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    if shutil.which("redis-server") is None or not list(Path("/usr/lib/postgresql").glob("*/bin/postgres")):
        pytest.skip("needs redis-server and PostgreSQL's server binaries")
    before = _namespaces()
    out = tmp_path / "scaling.md"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.fleet",
            "--smoke",
            "--hosts",
            "2",
            "--failover",
            "kill",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = out.read_text()
    # hosts | slots | jobs | time | speedup | ideal | FIFO | duplicates | lost
    drained = re.search(
        r"^\| 2 \| 2 \| 8 \| [\d.]+ s \| [^|]+ \| [^|]+ \| 0 \| 0 \| 0 \|", text, re.MULTILINE
    )
    assert drained, text
    taken_over = re.search(
        r"^\| kill \(h\d\) \| [\d.]+ s \| succeeded \| h\d \| \d+ \| 2 \| no \| 0 \|", text, re.MULTILINE
    )
    assert taken_over, text
    assert _namespaces() <= before  # its namespaces are gone
