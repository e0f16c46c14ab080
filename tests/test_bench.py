"""The benchmarks of ``make bench`` run, at a tiny size, and print every figure with its anchor:
a bench that breaks fails CI here rather than on the day someone measures. Nothing is timed:
the figures themselves are bench/'s to print, never a test's to assert."""

from __future__ import annotations

import pytest

from bench import bot_memory, queue_scale, submit_throughput
from tests.conftest import pg_database

DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


async def needs(db: str) -> None:
    """Skip (fail in CI) a PostgreSQL run without a server, as the database fixtures do: the
    benches create and drop a database of their own on it."""
    if db == "postgres":
        async with pg_database("genbot_bench_probe"):
            pass


@pytest.mark.parametrize("db", DATABASES)
async def test_queue_scale_prints_each_figure_with_its_anchor(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await needs(db)
    await queue_scale.main(
        queue_scale.parse_args(["--db", db, "--rows", "30", "--reads", "10", "--heal-max", "30"])
    )
    out = capsys.readouterr().out
    for figure in (
        "position (queue.position)",
        "status view (Genbot.view)",
        "places (queue.lined_up)",
        "sweep, all in place",
        "sweep, Redis emptied",
    ):
        line = next(line for line in out.splitlines() if figure in line)
        assert "bare" in line, line  # printed against its anchor
    assert "healed 30" in out  # the emptied sweep put every row back in line


async def test_bot_memory_reads_a_real_bot_idle_and_busy(capsys: pytest.CaptureFixture[str]) -> None:
    await bot_memory.main(bot_memory.parse_args(["--db", "sqlite", "--jobs", "4", "8", "--concurrency", "2"]))
    out = capsys.readouterr().out
    assert "(anchor)" in out
    assert "marginal, 4 -> 8 jobs" in out
    assert "RATIO RSS with 8 jobs / idle" in out
    assert "refused" not in out


async def test_submit_throughput_breakdown_seeds_the_tickets_it_needs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--db", "sqlite", "--n", "20", "--rounds", "1", "--concurrency", "4", "--breakdown"]
    await submit_throughput.main(submit_throughput.parse_args(args))
    out = capsys.readouterr().out
    assert "RATIO genbot/baseline" in out
    for step in ("parse and prepare", "store.create", "queue.submit", "store.update"):
        assert step in out
