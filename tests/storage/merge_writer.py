"""A writer process for the merge concurrency tests: ``python -m tests.storage.merge_writer``.

Arguments: ``DB_URL GENERATION_ID FIRST COUNT [SECOND_ID]``. It opens its own Tortoise connection, warms it
up, prints ``ready`` and waits for one line on stdin (the start signal, so that every writer
process starts at once), then runs ``COUNT`` merge updates concurrently with ``asyncio.gather``:
update ``i`` writes ``{"refs": {"k<i>": i}, "top<i>": i}``. It prints one JSON line
``{"ok": n, "errors": [...]}`` and exits. With ``SECOND_ID``, each row gets every patch: in
batches of :data:`BATCH` patches of both rows (:meth:`update_many`, as a renderer's round
writes) when ``SECOND_ID`` is given, else in single merges of each row.
"""

from __future__ import annotations

import asyncio
import json
import sys

from bot.ports import RowUpdate
from storage import db
from storage.store import TortoiseGenerationStore

BATCH = 5


def patch_for(i: int) -> dict[str, object]:
    return {"refs": {f"k{i}": i}, f"top{i}": i}


async def batch(store: TortoiseGenerationStore, ids: tuple[int, int], numbers: range) -> None:
    await store.update_many([RowUpdate(gid, message=patch_for(i)) for i in numbers for gid in ids])


async def main(db_url: str, generation_id: int, first: int, count: int, second: int | None) -> None:
    await db.connect(db_url)
    try:
        store = TortoiseGenerationStore()
        assert await store.get(generation_id) is not None  # opens the connection before the start
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        if second is None:
            results = await asyncio.gather(
                *(store.update_message(generation_id, patch_for(i)) for i in range(first, first + count)),
                return_exceptions=True,
            )
        else:
            ids = (generation_id, second)
            results = await asyncio.gather(
                *(
                    batch(store, ids, range(i, min(i + BATCH, first + count)))
                    for i in range(first, first + count, BATCH)
                ),
                return_exceptions=True,
            )
            results += [None] * (count - len(results))  # each batch is BATCH merges
        errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
        print(json.dumps({"ok": len(results) - len(errors), "errors": errors}), flush=True)
    finally:
        await db.close()


if __name__ == "__main__":
    url, gid, first_i, n = sys.argv[1:5]
    asyncio.run(main(url, int(gid), int(first_i), int(n), int(sys.argv[5]) if len(sys.argv) > 5 else None))
