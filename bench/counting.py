"""Counted, not timed: the Redis round trips and SQL statements a piece of work costs.

- **Redis**: every request redis-py's asyncio connections send goes through
  ``AbstractConnection.send_packed_command`` (a single command, a script and a whole pipeline are one
  each); :class:`Counts` wraps it while counting and labels each send by its first command
  (``EVALSHA``, ``XADD``, ``MULTI`` for a transaction, ...), with ``+N`` for a pipeline of N.
- **SQL**: every statement Tortoise runs goes through one of its client's ``execute_insert``,
  ``execute_many``, ``execute_query``, ``execute_query_dict`` or ``execute_script``; each is wrapped
  on every client class that defines it (asyncpg's, SQLite's, their transaction wrappers), and
  labelled by its verb and first table (``UPDATE generations``). A statement is counted once even
  where one of these methods calls another. Not counted: a transaction's ``BEGIN``/``COMMIT``
  (Tortoise sends them itself; the hot paths use none).

PostgreSQL's ``pg_stat_statements`` would count the server side, but it needs the server started
with it in ``shared_preload_libraries``; this works on any server and on SQLite, and only for this
process (a worker or bot of another process is counted by running it here).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

from redis.asyncio.connection import AbstractConnection
from tortoise.backends.base.client import BaseDBAsyncClient

SQL_METHODS = ("execute_insert", "execute_many", "execute_query", "execute_query_dict", "execute_script")
_TABLE = re.compile(r'\b(?:FROM|INTO|UPDATE)\s+"?([A-Za-z_][A-Za-z0-9_]*)', re.IGNORECASE)
_inside_sql: contextvars.ContextVar[bool] = contextvars.ContextVar("genbot_bench_inside_sql", default=False)


#: The statement after a ``WITH`` clause: its verb follows the clause's closing parenthesis.
_AFTER_WITH = re.compile(r"\)\s*(UPDATE|INSERT|DELETE|SELECT)\b", re.IGNORECASE)


def sql_label(query: str) -> str:
    """``SELECT generations``: a statement's verb and the first table it names. A statement led by
    a ``WITH`` clause (a row lock, say) is labelled by the verb after it."""
    verb = query.lstrip().split(None, 1)[0].upper() if query.strip() else "?"
    if verb == "WITH" and (main := _AFTER_WITH.search(query)) is not None:
        verb, query = main.group(1).upper(), query[main.start(1) :]
    table = _TABLE.search(query)
    return f"{verb} {table.group(1)}" if table else verb


def redis_label(command: Any) -> str:
    """The first command of a packed request (``*3\\r\\n$4\\r\\nSET...``), ``+N`` if it holds N more."""
    data = command if isinstance(command, bytes | str) else b"".join(command)
    raw = data.encode() if isinstance(data, str) else data
    parts = raw.split(b"\r\n", 3)
    name = parts[2].decode(errors="replace").upper() if len(parts) > 2 else "?"
    more = raw.count(b"\r\n*") + raw.startswith(b"*") - 1
    return f"{name} +{more}" if more > 0 else name


def _clients() -> Iterator[type]:
    seen: set[type] = set()
    todo: list[type] = [BaseDBAsyncClient]
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        todo.extend(cls.__subclasses__())
        yield cls


class Counts:
    """Redis round trips and SQL statements of this process while :meth:`counting`."""

    def __init__(self) -> None:
        self.redis: Counter[str] = Counter()
        self.sql: Counter[str] = Counter()

    @property
    def round_trips(self) -> int:
        return sum(self.redis.values())

    @property
    def statements(self) -> int:
        return sum(self.sql.values())

    @contextlib.contextmanager
    def counting(self) -> Iterator[Counts]:
        """Count until the block ends. Import the database drivers' Tortoise clients first (the
        runtime has, once connected): a client class imported later is not wrapped."""
        counts = self
        undo: list[tuple[type, str, Any]] = []
        send = AbstractConnection.send_packed_command

        async def counted_send(conn: AbstractConnection, command: Any, check_health: bool = True) -> None:
            counts.redis[redis_label(command)] += 1
            await send(conn, command, check_health)

        def wrap(method: Any) -> Any:
            @functools.wraps(method)
            async def counted(client: Any, query: str, *args: Any, **kwargs: Any) -> Any:
                if _inside_sql.get():
                    return await method(client, query, *args, **kwargs)
                counts.sql[sql_label(query)] += 1
                token = _inside_sql.set(True)
                try:
                    return await method(client, query, *args, **kwargs)
                finally:
                    _inside_sql.reset(token)

            return counted

        AbstractConnection.send_packed_command = counted_send  # type: ignore[method-assign,assignment]
        undo.append((AbstractConnection, "send_packed_command", send))
        try:
            for cls in list(_clients()):
                for name in SQL_METHODS:
                    if name in cls.__dict__:
                        original = cls.__dict__[name]
                        setattr(cls, name, wrap(original))
                        undo.append((cls, name, original))
            yield self
        finally:
            for cls, name, original in reversed(undo):
                setattr(cls, name, original)

    def per(self, n: int, top: int = 8) -> str:
        """``6.2 Redis round trips (EVALSHA 1.0, ...); 4.0 SQL statements (INSERT generations
        1.0, ...)``: the counts divided by ``n``, the ``top`` most frequent of each named."""

        def named(counter: Counter[str]) -> str:
            return ", ".join(f"{label} {count / n:.2f}" for label, count in counter.most_common(top))

        return (
            f"{self.round_trips / n:.2f} Redis round trips ({named(self.redis)}); "
            f"{self.statements / n:.2f} SQL statements ({named(self.sql)})"
        )
