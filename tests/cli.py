"""Run the real ``genbot`` command line as a separate process and read what a user reads."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

GENBOT = [sys.executable, "-m", "bot.cli"]
#: ``genbot`` as an installation without the extras runs it (tests/without_extras.py).
GENBOT_CORE = [sys.executable, "-m", "tests.without_extras"]
ROOT = Path(__file__).resolve().parents[1]


def genbot_env(env: dict[str, str]) -> dict[str, str]:
    """This process's environment without the GENBOT_ settings of the caller's shell (the tests'
    own ``GENBOT_TEST_*`` stay), plus ``env``."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.upper().startswith("GENBOT_") or name.upper().startswith("GENBOT_TEST_")
    }
    return {**inherited, "PYTHONPATH": str(ROOT), **env}


@dataclass
class Exited:
    code: int
    stdout: str
    stderr: str

    def one_line(self) -> str:
        """The one ``genbot:`` line on stderr (asserted: nothing else there, no traceback)."""
        assert "Traceback" not in self.stderr, self.stderr
        lines = self.stderr.splitlines()
        assert len(lines) == 1, f"expected one line on stderr, got:\n{self.stderr}"
        assert lines[0].startswith("genbot: "), lines[0]
        return lines[0]


async def run_genbot(
    *args: str, cwd: Path, env: dict[str, str], timeout: float = 60, genbot: Sequence[str] = GENBOT
) -> Exited:
    """Run ``genbot *args`` in ``cwd`` to its end (bounded by ``timeout``, a hang guard, not a
    measurement)."""
    proc = await asyncio.create_subprocess_exec(
        *genbot,
        *args,
        cwd=cwd,
        env=genbot_env(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Exited(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


@contextlib.asynccontextmanager
async def genbot_running(
    command: str, cwd: Path, env: dict[str, str], genbot: Sequence[str] = GENBOT
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``genbot <command>`` for the block, then stopped with SIGINT as a user stops it, and
    expected to stop cleanly (it sends what it still holds on the way). Its log goes to
    ``cwd/<command>.log``."""
    log = cwd / f"{command}.log"
    with log.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            *genbot, command, cwd=cwd, env=genbot_env(env), stdout=asyncio.subprocess.PIPE, stderr=stderr
        )
        try:
            yield proc
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise
    assert proc.returncode == 0, log.read_text(errors="replace")
