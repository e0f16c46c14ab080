"""One ``genbot dev`` per data folder: the lock, and its release by the OS."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from bot.config import StartupError
from bot.devlock import data_folder_lock

ROOT = Path(__file__).resolve().parents[2]
HOLD = "import sys, time; from pathlib import Path; from bot.devlock import data_folder_lock\n" + (
    "with data_folder_lock(Path(sys.argv[1])):\n    print('locked', flush=True)\n    time.sleep(600)\n"
)


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with data_folder_lock(data):
        with pytest.raises(StartupError) as caught, data_folder_lock(data):
            pass
        assert str(caught.value) == (
            f"another genbot dev is running on {data.resolve()} (pid {os.getpid()}): stop it first, "
            "or run this one from another folder (each folder keeps its own data/)"
        )
    with data_folder_lock(data):  # released at the end of the block
        assert (data / "genbot.lock").read_text() == f"{os.getpid()}\n"


async def test_the_lock_of_a_killed_process_is_free(tmp_path: Path) -> None:
    data = tmp_path / "data"
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLD,
        str(data),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert await asyncio.wait_for(holder.stdout.readline(), 30) == b"locked\n"
        with pytest.raises(StartupError, match=rf"\(pid {holder.pid}\)"), data_folder_lock(data):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        await holder.wait()
    with data_folder_lock(data):
        pass
