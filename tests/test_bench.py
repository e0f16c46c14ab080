"""The benchmarks of ``make bench`` run, at a tiny size, and print every figure with its anchor:
a bench that breaks fails CI here rather than on the day someone measures. Nothing is timed:
the figures themselves are bench/'s to print, never a test's to assert."""

from __future__ import annotations

import pytest

from bench import (
    ack_latency,
    ack_latency_slack,
    bot_memory,
    progress_writes,
    queue_scale,
    render_cpu,
    submit_throughput,
    worker_drain,
)
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


async def test_ack_latency_prints_the_local_chats_p99_against_a_bare_server(
    capsys: pytest.CaptureFixture[str],
) -> None:
    await ack_latency.main(ack_latency.parse_args(["--db", "sqlite", "--burst", "4", "--rounds", "1"]))
    out = capsys.readouterr().out
    assert "RATIO ack p99 genbot/bare" in out
    assert "bare: p50" in out and "genbot: p50" in out


async def test_ack_latency_slack_times_signed_slash_commands_against_a_bare_bolt_app(
    capsys: pytest.CaptureFixture[str],
) -> None:
    await ack_latency_slack.main(ack_latency_slack.parse_args(["--burst", "4", "--rounds", "1"]))
    out = capsys.readouterr().out
    assert "through Slack in HTTP mode" in out
    assert "RATIO ack p99 genbot/bare" in out
    assert "bare: p50" in out and "genbot: p50" in out
    # genbot posted each round's status messages (warm-up and counted) through the fake Web API
    assert "chat.postMessage 200 x8" in out
    assert " 429 " not in out  # within Slack's limits


@pytest.mark.parametrize("db", DATABASES)
async def test_submit_throughput_times_the_whole_request_and_counts_it(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await needs(db)
    args = ["--db", db, "--n", "20", "--rounds", "1", "--concurrency", "4", "--counted", "8"]
    await submit_throughput.main(submit_throughput.parse_args(args))
    out = capsys.readouterr().out
    assert "RATIO request/baseline" in out  # the whole request against raw arq
    counted = {line.split()[0]: line for line in out.split("counted (not timed)")[1].splitlines()[1:4]}
    assert set(counted) == {"baseline", "genbot", "request"}
    assert "INSERT generations 1.00" in counted["request"]  # one row per request, counted
    assert "INSERT chat_messages 1.00" in counted["request"]  # and its status message posted


@pytest.mark.parametrize("db", DATABASES)
async def test_worker_drain_runs_both_workers_and_counts_a_job(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await needs(db)
    args = ["--db", db, "--n", "20", "--rounds", "1", "--warmup", "5", "--counted", "10"]
    await worker_drain.main(worker_drain.parse_args(args))
    out = capsys.readouterr().out
    assert "RATIO genbot/bare" in out
    assert "genbot's CPU per job" in out
    genbot = next(line for line in out.splitlines() if line.strip().startswith("genbot") and "SQL" in line)
    assert "UPDATE generations" in genbot  # the runner's transitions, counted


@pytest.mark.parametrize("db", DATABASES)
async def test_progress_writes_counts_both_sides_of_each_pattern(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await needs(db)
    await progress_writes.main(progress_writes.parse_args(["--db", db, "--jobs", "3", "--reports", "2"]))
    out = capsys.readouterr().out
    for pattern in ("at once", "back to back"):
        assert f"RATIO {pattern}:" in out
        assert sum(line.startswith(pattern) for line in out.splitlines()) == 2  # both sides
    assert "every row ended with its job's last report" in out


async def test_render_cpu_renders_every_job_to_its_end(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--db", "sqlite", "--jobs", "4", "--warmup", "2", "--counted", "2", "--steps", "1"]
    await render_cpu.main(render_cpu.parse_args([*args, "--step-ms", "0", "--concurrency", "2"]))
    out = capsys.readouterr().out
    assert "RATIO renderer/bare" in out
    assert "message writes per job" in out
    assert "UPDATE chat_messages" in out  # the renderer's edits, counted
