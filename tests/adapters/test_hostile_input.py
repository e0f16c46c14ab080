"""Hostile input at every edge, counted (issue 10).

A curated corpus plus generated cases (``random.Random(SEED)``: the same cases every run) go through

(a) the local chat API over real HTTP, against the real core on PostgreSQL (which refuses NUL in
    text: a row stored from a NUL-laden prompt proves the cleaning): text commands, structured
    commands, buttons, plain messages, raw bodies, WebSocket query strings, Host and Origin headers;
(b) the Slack payload parser, and correctly signed requests through the real Bolt app in HTTP mode
    against the fake Web API (plus unsigned and badly signed ones);
(c) Discord: the pure translation of interaction payloads, and interactions through the real
    client's parser against the fake REST API.

Each part counts, over all its inputs: server errors (a 5xx, an exception escaping, or the core's
"Something went wrong"), bad inputs queued (a row written or a job in Redis for an input that must
be refused; an accepted input stored unclean), refusals that are not one catalogue sentence (or show
a traceback or library wording), replies beyond the bound, and mentions that reach Slack or Discord
unescaped. Every count must be zero. Every case is sent and checked in turn; nothing is timed.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import os
import random
import re
import time
import unicodedata
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import aiohttp
import discord
import pytest
import pytest_asyncio
from discord.user import ClientUser
from redis.asyncio import Redis

from adapters.discord.client import GenbotClient
from adapters.discord.commands import request_of
from adapters.slack.payloads import MalformedRequest, action_target, command_request, request_body
from bot.app import Runtime, runtime
from bot.embedded_redis import EmbeddedRedis
from bot.errors import ErrorCode, GenbotError, describe
from bot.text import REPLY_MAX
from storage.models import ChatMessageRow, GenerationRow, WorkspaceRow
from tests.adapters.discord.conftest import discord_stack
from tests.adapters.discord.fake import (
    APP_ID,
    BOT_USER,
    FakeDiscord,
    Picked,
    button_payload,
    interaction_payload,
)
from tests.adapters.slack.conftest import ADMIN, SECRET, SlackClient
from tests.adapters.slack.fake_slack import TOKEN, FakeSlack
from tests.chat_client import all_handled
from tests.conftest import make_settings
from tests.image_jobs import every_spec
from tests.stack import bot_running

pytestmark = pytest.mark.postgres

SEED = 10
SPECS = every_spec()

# -- the corpus ---------------------------------------------------------------------------------

# ruff: noqa: RUF001  (look-alike digits and letters on purpose)
CONTROLS = [
    "\x00",
    "\x01",
    "\x07",
    "\x08",
    "\x1b[31m",
    "\x7f",
    "\x85",
    "\x9b",
    "\r\n",
    "\x0b",
    "\x0c",
    "\x1c",
]
INVISIBLE = [
    "\u200b",  # zero-width space
    "\u200c",
    "\u200d",
    "\u2060",  # word joiner
    "\ufeff",  # byte order mark
    "\u00ad",  # soft hyphen
    "\U000e0041\U000e0042",  # tag characters
    "\U000e007f",
    "\u0301\u0308",  # combining marks alone
    "\ufe0f",  # variation selector
    "\u3164",  # Hangul filler
    "\u2800",  # blank Braille pattern
    "\u202e",  # right-to-left override
    "\u2066\u2069",  # isolates
    "\u180e",
    "\u034f",
    "\u115f\u1160",
    "\u3000",
    "\u00a0",
    "\u2028",
]
SURROGATES = ["\ud800", "\udfff", "\udbff\udbff"]
BAD_NUMBERS = [
    "٣",
    "５",
    "1_000",
    "1e3",
    "0x10",
    "+5",
    "-1",
    "5.0",
    "²",
    "9" * 25,
    "Infinity",
    "NaN",
    "1 0",
    "໓",
    "𝟓",
    "٢٠",
]
PINGS = ["@everyone", "@here", "<!channel>", "<!here>", "<!everyone>", "<@U0ADMIN>", "<@300000000000000002>"]
LEGIT = [
    "👩‍👩‍👧‍👦 family",
    "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f flag",
    "café crème",
    "שלום עולם",
    "مرحبا بالعالم",
    "東京の夜景",
    "e\u0301tude",
]
#: Non-ASCII decimal digits of many scripts, for generated numbers.
OTHER_DIGITS = [chr(c) for c in range(0x0660, 0x1CFF) if unicodedata.category(chr(c)) == "Nd"]
#: Words a refusal must never contain: tracebacks, exception names, pydantic's own wording.
LIBRARY_WORDS = (
    "Traceback",
    "Exception",
    "Error:",
    "Input should",
    "validation error",
    "pydantic",
    "errors.pydantic.dev",
    "NoneType",
    "KeyError",
    "ValueError",
    "TypeError",
    "JSONDecodeError",
    "object has no attribute",
    "Something went wrong",
)
TITLES = tuple(describe(code).title for code in ErrorCode if code is not ErrorCode.INTERNAL)
REFUSE, ACCEPT, EITHER = "refuse", "accept", "either"


def generated_prompts(rng: random.Random, count: int) -> list[tuple[str, str]]:
    """``count`` prompts, each with what must happen to it: a word hidden among controls,
    invisible marks and surrogates is accepted (cleaned); junk with no visible character at all is
    refused. Both by construction, not by asking the code under test."""
    junk = [c for c in CONTROLS if c.isspace() or len(c) == 1] + INVISIBLE + SURROGATES  # nothing drawn
    cases = []
    for i in range(count):
        parts = rng.choices(junk, k=rng.randint(1, 6))
        if i % 2:
            parts.insert(rng.randrange(len(parts) + 1), rng.choice(["fox", "owl", "lake", "ÿ", "東"]))
            cases.append(("".join(parts), ACCEPT))
        else:
            cases.append(("".join(parts), REFUSE))
    return cases


def generated_numbers(rng: random.Random, count: int) -> list[str]:
    """Numbers written in other scripts' digits, or ASCII digits with one foreign sign."""
    out = []
    for i in range(count):
        if i % 2:
            out.append("".join(rng.choices(OTHER_DIGITS, k=rng.randint(1, 3))))
        else:
            digits = str(rng.randint(1, 40))
            at = rng.randrange(len(digits) + 1)
            out.append(digits[:at] + rng.choice(["_", ",", ".", "e", "\u066b", "\u2009", "٫"]) + digits[at:])
    return out


# -- counting ---------------------------------------------------------------------------------


#: Where ``make reliability`` collects the figures (a JSON line per part), as the fault suite does.
FIGURES_FILE = os.environ.get("GENBOT_TEST_FAULT_FIGURES")


@dataclass
class Tally:
    """What the inputs of one part did; ``problems`` must stay empty."""

    part: str
    inputs: int = 0
    refused: int = 0
    accepted: int = 0
    problems: list[str] = field(default_factory=list)

    def problem(self, case: str, what: str) -> None:
        self.problems.append(f"{case[:80]!r}: {what}")

    def sentence(self, case: str, text: str, *, titled: Callable[[str], str] | None = None) -> None:
        """``text`` is one refusal: a catalogue title (formatted by ``titled``) and genbot's
        words, no library wording, within the bound."""
        self.refused += 1
        if titled is not None and not any(text.startswith(titled(t)) for t in TITLES):
            self.problem(case, f"not a catalogue sentence: {text[:120]!r}")
        self.words(case, text)

    def words(self, case: str, text: str) -> None:
        for word in LIBRARY_WORDS:
            if word in text:
                self.problem(case, f"shows {word!r}: {text[:160]!r}")
        if len(text) > REPLY_MAX:
            self.problem(case, f"a reply of {len(text)} characters")

    def api_error(self, case: str, status: int, body: Any) -> None:
        """A 4xx of the local chat or Slack: ``{"ok": false, "error": "<one sentence>"}``."""
        self.refused += 1
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, str) or body.get("ok") is not False:
            self.problem(case, f"{status} without one JSON sentence: {body!r:.120}")
        elif "\n" in error or len(error) > 200 or not error.endswith("."):
            self.problem(case, f"{status} error is not one sentence: {error!r:.120}")
        else:
            self.words(case, error)

    def done(self, minimum: int) -> None:
        """No problem, and enough inputs of both kinds (a run that refused or accepted almost
        nothing would prove nothing). ``make reliability`` collects the counts."""
        if FIGURES_FILE:
            with open(FIGURES_FILE, "a") as out:
                counts = {"part": self.part, "inputs": self.inputs, "refused": self.refused}
                counts |= {"accepted": self.accepted, "problems": len(self.problems)}
                out.write(json.dumps({"kind": "fuzz", **counts}) + "\n")
        shown = "\n  ".join(self.problems[:25])
        assert not self.problems, (
            f"{self.part}: {len(self.problems)} problems of {self.inputs} inputs:\n  {shown}"
        )
        assert self.inputs >= minimum, f"{self.part}: only {self.inputs} inputs"
        assert self.refused >= minimum // 4 and self.accepted >= 20, self


def clean_text(text: str) -> bool:
    """Stored text as genbot promises it: no control character, no surrogate."""
    return all(unicodedata.category(c) not in ("Cc", "Cs") for c in text)


def visible(text: str) -> bool:
    """Written out here rather than imported, so that the check does not share a bug with
    :func:`bot.text.is_visible`."""
    blank = set("\u115f\u1160\u3164\uffa0\u2800")
    return any(unicodedata.category(c)[0] in "LNPS" and c not in blank for c in text)


async def queue_sizes(rt: Runtime, redis: Redis) -> tuple[int, int, int]:
    return (
        await GenerationRow.all().count(),
        await redis.zcard(rt.queue.keys.waiting("demo")),
        await redis.zcard(rt.queue.line_queue("demo")),
    )


async def check_new_rows(tally: Tally, case: str, before: int, expect: str) -> None:
    """After one input: a refused one wrote no row; an accepted one wrote clean rows."""
    rows = await GenerationRow.filter(id__gt=before).all()
    if expect == REFUSE and rows:
        tally.problem(case, f"queued: {[r.prompt[:40] for r in rows]}")
    for row in rows:
        for name, text in (
            ("prompt", row.prompt),
            ("negative", row.options.get("negative", "")),
            ("user_name", row.user_name),
        ):
            if not clean_text(text):
                tally.problem(case, f"stored {name} {text[:40]!r} unclean")
        if not visible(row.prompt) or row.prompt == "None" or len(row.prompt) > 1000:
            tally.problem(case, f"stored prompt {row.prompt[:40]!r}")
    if expect == ACCEPT and not rows:
        tally.problem(case, "an acceptable prompt was not queued")
    tally.accepted += bool(rows)


async def last_row_id() -> int:
    row = await GenerationRow.all().order_by("-id").first()
    return row.id if row else 0


# -- (a) the local chat -------------------------------------------------------------------------


@pytest_asyncio.fixture
async def pg_rt(
    redis_server: EmbeddedRedis, pg_url: str, tmp_path: Path, redis: Redis
) -> AsyncIterator[Runtime]:
    """A runtime on the run's PostgreSQL database, with no worker: accepted jobs stay queued."""
    async with runtime(make_settings(redis_server.url, pg_url, tmp_path)) as rt:
        yield rt


@dataclass(frozen=True)
class Req:
    name: str
    body: Any = None
    raw: bytes | None = None
    path: str = "/api/command"
    expect: str = REFUSE
    member: str = "alice"
    content_type: str = "application/json"


def text(member: str, line: str, expect: str = REFUSE) -> Req:
    return Req(line, {"user_id": member, "text": line}, expect=expect, member=member)


def structured(command: Any, options: Any, expect: str = REFUSE, member: str = "alice", **extra: Any) -> Req:
    body = {"user_id": member, "command": command, "options": options, **extra}
    return Req(f"{command!r:.30} {options!r:.60}", body, expect=expect, member=member)


def local_cases(rng: random.Random, status_message: int) -> list[Req]:
    cases: list[Req] = []
    # text commands: prompts with controls and surrogates are cleaned and queued ...
    cases += [text("alice", f"/imagine fox{c}tail", ACCEPT) for c in CONTROLS]
    cases += [text("alice", f"/imagine a{s}b", ACCEPT) for s in SURROGATES]
    cases += [text("alice", f"/imagine {t}", ACCEPT) for t in LEGIT]
    cases += [text("alice", f"/imagine look {p} here", ACCEPT) for p in PINGS]
    cases += [text("alice", f"/imagine fox negative: blur{c}ry", ACCEPT) for c in CONTROLS[:4]]
    cases += [text("alice", f"/imagine {p}", e) for p, e in generated_prompts(rng, 40)]
    # ... and prompts that show nothing, or numbers that are not ASCII digits, are refused
    cases += [text("alice", f"/imagine {i * 3}") for i in INVISIBLE]
    cases += [text("alice", f"/imagine fox negative: {i}") for i in INVISIBLE[:8]]
    cases += [text("alice", f"/imagine fox steps: {n}") for n in BAD_NUMBERS]
    cases += [text("alice", f"/imagine fox seed: {n}") for n in BAD_NUMBERS[:8]]
    cases += [text("alice", f"/imagine fox steps: {n}") for n in generated_numbers(rng, 20)]
    cases += [
        text("alice", "/imagine " + "x" * 1001),
        text("alice", "/imagine \x00\x00\x00"),
        text("alice", "/imagine fox size: ５１２x５１２"),
        text("alice", "/imagine fox size: 512x512\x00x"),
        text("alice", "/" + "x\x00" * 5000),
        text("alice", "/imag\x00ine"),
        text("alice", "/ｉｍａｇｉｎｅ fox"),
        text("alice", "/\u200b"),
        text("alice", "/imagine style\x00: oil fox"),
        text("alice", "/cancel ٣"),
        text("alice", "/status ５"),
        text("alice", "/cancel " + "9" * 30),
        text("alice", "/status 99999999999999999999"),
        text("alice", "/cancel 0"),
        text("alice", "/queue now"),
        text("alice", "/admin pause"),  # not an admin
        text("admin", "/admin ban @Nobody\x00"),
        text("admin", "/admin ban @" + "\u200b" * 40),
        text("admin", "/admin ban @admin"),
        text("admin", "/admin ban @bob duration: ٣d"),
        text("admin", "/admin ban @bob duration: 1e3h"),
        text("admin", "/admin ban @bob reason: " + "r" * 600),
        text("admin", "/admin ban @bob jobs: cancel\x00\x00x"),
        text("admin", "/admin audit limit: ５"),
        text("admin", "/admin audit limit: 1_0"),
        text("admin", "/admin limits queued: ٣"),
        text("admin", "/admin limits rate: 1e3"),
        text("admin", "/admin block " + "\ufdfa" * 10),
        text("admin", "/admin block \u200b\u200b"),
        text("admin", "/admin unblock " + "spam" * 40),
        text("admin", "/admin cancel " + "9" * 50),
        text("admin", "/admin clear confirm: ٣٣٣٣"),
        text("admin", "/admin " + "q" * 5000),
    ]
    # the structured form: strict types, and the same refusals
    not_strings: list[Any] = [None, 5, 1.5, True, [], {}, ["fox"]]
    cases += [structured("imagine", {"prompt": v}) for v in not_strings]
    cases += [structured("imagine", {"prompt": "fox", "negative": v}) for v in not_strings[:4]]
    not_integers: list[Any] = [True, 1.5, None, [20], "20.0", 10**30, -5, 0, "٣", "+7"]
    cases += [structured("imagine", {"prompt": "fox", "steps": v}) for v in not_integers]
    names: list[Any] = [None, 5, [], {}, "x" * 65, "x" * 64, "imagine\x00", ""]
    cases += [structured(v, {}) for v in names]
    not_objects: list[Any] = [None, [], "prompt", 5]
    cases += [structured("imagine", v) for v in not_objects]
    cases += [
        structured("imagine", {"prompt": "fox", "sampler": "euler"}),
        structured("imagine", {"prompt": "fox", "sampler\x00" * 100: "x"}),
        structured("imagine", {"prompt": ""}),
        structured("imagine", {"prompt": "\u200b\u2060"}),
        structured("imagine", {"prompt": "fox", "negative": "\u3164"}),
        structured("imagine", {"prompt": "fox", "seed": 2**40}),
        structured("admin ban", {"member": None}, member="admin"),
        structured("admin ban", {"member": "bob", "reason": ["spam"]}, member="admin"),
        structured("admin pause", {"is_admin": "true"}),
        structured("imagine", {"prompt": "fox\x00\ud800"}, ACCEPT),
        structured("imagine", {"prompt": "owl", "steps": 20, "seed": "42"}, ACCEPT),
        structured("imagine", {"prompt": "owl", "negative": "blur\x1b"}, ACCEPT),
    ]

    # buttons
    def press(message_id: Any, action: Any = "cancel", member: str = "alice") -> Req:
        return Req(
            f"press {message_id!r:.30} {action!r:.30}",
            {"user_id": member, "message_id": message_id, "action": action},
            path="/api/action",
            member=member,
        )

    ids: list[Any] = [0, -1, 2**63, 2**64, True, 1.5, "1e3", "٣", None, [], "", " 1", 10**400]
    cases += [press(v) for v in ids]
    cases += [press(status_message, v) for v in not_strings[:5]]
    cases += [
        press(status_message, "explode"),
        press(status_message, "cancel\x00"),
        press(status_message, "x" * 10_000),
        press(status_message, "cancel", member="bob"),  # not Bob's job
        press(status_message, "reroll", member="bob"),
        press(2**63 - 1),  # no such message
        press(str(status_message) + "0" * 30),
    ]
    # raw bodies and members
    for raw in (
        b"",
        b"null",
        b"[]",
        b'"text"',
        b"{",
        b"\xff\xfe{}",
        b'{"user_id": "alice", "text": "/imagine fox"',
        b'{"user_id": "alice", "text": NaN}',
        b'{"user_id": "alice", "command": "imagine", "options": {"prompt": Infinity}}',
        b'{"user_id": "alice", "command": "imagine", "options": {"steps": 1e400}}',
        b'{"user_id": "alice", "message_id": Infinity, "action": "cancel"}',
        b'{"user_id": "alice", "message_id": 1e400, "action": "cancel"}',
        b'{"user_id": "alice", "message_id": 9223372036854775808, "action": "cancel"}',
        b'{"user_id": "alice", "text": "\\ud800"}',
        b'{"user_id": "alice", "text": "\\u0000"}',
        b'{"user_id": "alice", "text": "' + b"a" * 9000 + b'"}',
        b'{"user_id": "alice", "command": "imagine", "options": {"steps": ' + b"9" * 5000 + b"}}",
        b"[" * 50_000,
        b"[" * 70_000,  # beyond 64 KiB
        b'{"a": ' * 5000 + b"1" + b"}" * 5000,
    ):
        path = "/api/action" if b"message_id" in raw else "/api/command"
        cases.append(Req(f"raw {raw[:50]!r}", raw=raw, path=path))
    cases += [
        Req("text/plain", raw=b'{"user_id": "alice", "text": "hi"}', content_type="text/plain"),
        Req("form", raw=b"user_id=alice&text=hi", content_type="application/x-www-form-urlencoded"),
        Req(
            "bogus charset",
            raw=b'{"user_id": "alice", "text": "/imagine x\\u0000y"}',
            content_type="application/json; charset=bogus",
            expect=ACCEPT,
        ),
    ]
    cases += [
        Req(f"member {v!r:.30}", {"user_id": v, "text": "/imagine fox"})
        for v in (None, 5, "alice\x00", "ALICE", "../admin", "admin ", "", "\u200badmin", ["admin"])
    ]
    # plain messages: cleaned and kept, or refused when they show nothing
    cases += [text("alice", f"hello{c}world", EITHER) for c in CONTROLS[:6]]
    cases += [text("alice", v) for v in ("\u200b", "\x00", "\u3164 \u2800", "   ", "\ud800")]
    cases += [Req("not a string", {"user_id": "alice", "text": v}) for v in (None, 5, ["hi"], {"t": 1})]
    return cases


async def send(http: aiohttp.ClientSession, base: str, req: Req) -> tuple[int, Any]:
    data = req.raw if req.raw is not None else json.dumps(req.body).encode()  # ensure_ascii: \\ud800
    async with http.post(base + req.path, data=data, headers={"Content-Type": req.content_type}) as resp:
        try:
            body = await resp.json(content_type=None)
        except ValueError:
            body = None
        return resp.status, body


async def raw_status(port: int, request: bytes) -> int:
    """Send ``request`` bytes as they are and read the status code (exotic headers that a client
    library would refuse to send)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        status_line = await reader.readline()
        await reader.read()  # Connection: close: the server ends it
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return int(status_line.split()[1])


async def test_local_chat_api(pg_rt: Runtime, redis: Redis) -> None:
    rng = random.Random(SEED)
    tally = Tally("local chat")
    async with bot_running(pg_rt) as (base, _stop), aiohttp.ClientSession() as http:
        port = int(base.rsplit(":", 1)[1])
        status, _ = await send(http, base, text("alice", "/imagine a calm lake"))
        assert status == 200
        await all_handled()  # the chat answers, then runs the command
        lake = await ChatMessageRow.filter(status__not_isnull=True).order_by("-id").first()
        assert lake is not None

        for req in local_cases(rng, lake.id):
            tally.inputs += 1
            before_rows = await last_row_id()
            before_queue = await queue_sizes(pg_rt, redis)
            mark = (await ChatMessageRow.all().order_by("-id").first() or lake).id
            try:
                status, body = await send(http, base, req)
            except aiohttp.ClientError as exc:
                tally.problem(req.name, f"the server broke the connection: {exc!r}")
                continue
            if status >= 500:
                tally.problem(req.name, f"HTTP {status}")
                continue
            await all_handled()
            replies = await ChatMessageRow.filter(id__gt=mark, ephemeral_to=req.member, bot=True).all()
            for reply in replies:
                tally.words(req.name, reply.text or "")
            if status >= 400:
                tally.api_error(req.name, status, body)
            elif req.expect == REFUSE:
                if not replies:
                    tally.problem(req.name, "accepted without a word: expected a refusal")
                for reply in replies:
                    tally.sentence(req.name, reply.text or "", titled=lambda t: f"{t}: ")
            if req.expect == REFUSE and await queue_sizes(pg_rt, redis) != before_queue:
                tally.problem(req.name, "the queue changed")
            await check_new_rows(tally, req.name, before_rows, req.expect if status < 400 else REFUSE)
        for message in await ChatMessageRow.filter(bot=False).all():
            if not clean_text((message.text or "").replace("\n", " ").replace("\t", " ")):
                tally.problem("plain messages", f"stored {message.text!r:.60}")

        # WebSocket and history query strings
        queries = [
            "",
            "user_id=",
            "user_id=%00",
            "user_id=alice%00",
            "user_id[]=alice",
            "user_id=" + "a" * 5000,
            "user_id=%ff%fe",
            "user_id=%E2%80%8Balice",
            "user_id=ALICE",
            "user_id=alice&user_id=admin",
            "user_id=admin%0d%0aX-Evil:%201",
            "user_id=" + quote("../admin"),
            "%00=%00",
        ]
        for query in queries:
            for path in ("/ws", "/api/messages"):
                tally.inputs += 1
                try:
                    if path == "/ws":
                        ws = await http.ws_connect(f"{base}{path}?{query}")
                        await ws.close()
                        continue
                    async with http.get(f"{base}{path}?{query}") as resp:
                        if resp.status >= 400:
                            tally.api_error(query, resp.status, await resp.json(content_type=None))
                        elif resp.status >= 500:
                            tally.problem(query, f"HTTP {resp.status}")
                except aiohttp.WSServerHandshakeError as exc:
                    if exc.status >= 500:
                        tally.problem(query, f"WebSocket handshake {exc.status}")

        # Host and Origin headers, sent as raw bytes: only the chat's own names get in
        own = [f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", f"LOCALHOST.:{port}", "localhost"]
        hostile_hosts = [
            f"attacker.example:{port}",
            f"localhost.attacker.example:{port}",
            f"127.0.0.1.nip.io:{port}",
            f"::1:{port}",
            "",
            f"localhost:{port}, attacker.example",
            f"localhost\t:{port}",
            f"%6cocalhost:{port}",
            f"xn--localhost-xyz:{port}",
            f"lоcalhost:{port}",  # a Cyrillic o
            f"localhost:{port}a",
            "a" * 9000,
            f"127.0.0.2:{port}",
            f"0.0.0.0:{port}",
            f"[::ffff:127.0.0.1]:{port}",
        ]
        hostile_origins = [
            "null",
            "http://attacker.example",
            f"http://localhost:{port}.attacker.example",
            f"http://localhost:{port + 1}",
            "javascript:alert(1)",
            "",
            f"http://127.0.0.1:{port}",  # another of the chat's names than the Host's
            f"file://localhost:{port}",
        ]

        def request(host: str | None, origin: str | None, body: bytes) -> bytes:
            lines = ["POST /api/command HTTP/1.1"]
            if host is not None:
                lines.append(f"Host: {host}")
            if origin is not None:
                lines.append(f"Origin: {origin}")
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}", "Connection: close"]
            return "\r\n".join(lines).encode("utf-8", "surrogateescape") + b"\r\n\r\n" + body

        pause = json.dumps({"user_id": "admin", "text": "/admin pause"}).encode()
        queue = json.dumps({"user_id": "admin", "text": "/queue"}).encode()
        for host in hostile_hosts:
            tally.inputs += 1
            status = await raw_status(port, request(host, f"http://{host}", pause))
            if status != 403 and not (400 <= status < 500):
                tally.problem(f"Host {host!r:.40}", f"HTTP {status}")
        tally.inputs += 1
        if (status := await raw_status(port, request(None, None, pause))) not in (400, 403):
            tally.problem("no Host", f"HTTP {status}")
        for origin in hostile_origins:
            tally.inputs += 1
            if (status := await raw_status(port, request(own[0], origin, pause))) != 403:
                tally.problem(f"Origin {origin!r}", f"HTTP {status}")
        for host in own:
            tally.inputs += 1
            if (status := await raw_status(port, request(host, f"http://{host}", queue))) != 200:
                tally.problem(f"own Host {host!r}", f"HTTP {status}")
        for host in hostile_hosts[:3]:
            tally.inputs += 1
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await http.ws_connect(
                    f"{base}/ws?user_id=admin", headers={"Host": host, "Origin": f"http://{host}"}
                )
        await all_handled()
        assert not await WorkspaceRow.filter(paused=True).exists(), "a refused request paused the queue"
    tally.done(minimum=300)


# -- (b) Slack ----------------------------------------------------------------------------------

SLACK_PINGS = re.compile(r"<[!@#]")


@pytest_asyncio.fixture
async def slack_pg_rt(
    redis_server: EmbeddedRedis, pg_url: str, tmp_path: Path, redis: Redis
) -> AsyncIterator[tuple[Runtime, FakeSlack]]:
    fake = FakeSlack()
    await fake.start()
    settings = make_settings(
        redis_server.url,
        pg_url,
        tmp_path,
        platform="slack",
        slack={
            "bot_token": TOKEN,
            "signing_secret": SECRET,
            "api_base_url": fake.api_url,
            "http_host": "127.0.0.1",
            "http_port": 0,
            "admin_user_ids": [ADMIN],
        },
    )
    try:
        async with runtime(settings) as rt:
            yield rt, fake
    finally:
        await fake.stop()


def slack_form(client: SlackClient, **fields: str) -> str:
    body = dict(parse_qsl(client.command_body("/imagine", "fox"), keep_blank_values=True))
    return urlencode({**body, **fields})


def slack_press(client: SlackClient, **changes: Any) -> str:
    payload = {
        "type": "block_actions",
        "team": {"id": "T0001", "domain": "test"},
        "user": {"id": "UALICE", "username": "alice", "name": "alice", "team_id": "T0001"},
        "channel": {"id": "C0001", "name": "general"},
        "response_url": client.fake.response_url(f"press-{client.sent}"),
        "actions": [{"type": "button", "action_id": "genbot_cancel", "value": "1"}],
        **changes,
    }
    client.sent += 1
    return urlencode({"payload": json.dumps(payload)})


async def test_slack_payloads_and_signed_requests(
    slack_pg_rt: tuple[Runtime, FakeSlack], redis: Redis
) -> None:
    rt, fake = slack_pg_rt
    rng = random.Random(SEED + 1)
    tally = Tally("slack")

    # the pure parser: every input is a request, a MalformedRequest or a GenbotError, never more
    base_form = {
        "team_id": "T0001",
        "user_id": "UALICE",
        "user_name": "alice",
        "channel_id": "C0001",
        "command": "/imagine",
        "text": "fox",
    }
    hostile_values: list[Any] = [
        "",
        "\x00",
        "T\u0661",
        "u1",
        "U" * 50,
        "C1 C2",
        None,
        5,
        [],
        {},
        "<@U1>",
        "T0001\n",
    ]
    for name in ("team_id", "user_id", "channel_id", "user_name", "text", "command"):
        for value in hostile_values:
            tally.inputs += 1
            form = {**base_form, name: value}
            try:
                request = command_request(form, SPECS)
                if not clean_text(request.actor.display_name):
                    tally.problem(f"{name}={value!r}", "unclean name")
            except GenbotError as exc:
                tally.sentence(f"{name}={value!r}", exc.text.what)
            except Exception as exc:
                tally.problem(f"{name}={value!r}", f"raised {exc!r}")
    press_base: dict[str, Any] = {
        "type": "block_actions",
        "team": {"id": "T0001"},
        "user": {"id": "UALICE", "username": "alice"},
        "channel": {"id": "C0001"},
        "actions": [{"action_id": "genbot_cancel", "value": "1"}],
    }
    for name in ("team", "user", "channel", "actions", "enterprise", "response_url"):
        for value in [*hostile_values, [{}], [{"value": "٣"}], {"id": None}, {"id": "U\x00"}]:
            tally.inputs += 1
            payload = {**press_base, name: value}
            for parse in (
                lambda p=payload: action_target(p),
                lambda p=payload: request_body(urlencode({"payload": json.dumps(p)}), None),
            ):
                try:
                    parse()
                except (GenbotError, MalformedRequest):
                    pass
                except Exception as exc:
                    tally.problem(f"press {name}={value!r}", f"raised {exc!r}")

    async with bot_running(rt) as (base, _stop), aiohttp.ClientSession() as http:
        client = SlackClient(http, f"{base}/slack/events", fake)
        cases: list[tuple[str, str, str]] = []  # (name, signed body, expect)
        for c in CONTROLS:
            cases.append((f"imagine fox{c!r}", client.command_body("/imagine", f"fox{c}tail"), ACCEPT))
        cases += [(f"imagine {t}", client.command_body("/imagine", t), ACCEPT) for t in LEGIT]
        cases += [(f"imagine {p}", client.command_body("/imagine", f"look {p} here"), ACCEPT) for p in PINGS]
        cases.append(("a payload of apples", client.command_body("/imagine", "a payload of apples"), ACCEPT))
        for prompt, expect in generated_prompts(rng, 20):
            prompt = "".join(ch for ch in prompt if not "\ud800" <= ch <= "\udfff")  # form fields are UTF-8
            if expect == REFUSE or any(w in prompt for w in ("fox", "owl", "lake", "ÿ", "東")):
                cases.append((f"imagine {prompt!r}", client.command_body("/imagine", prompt), expect))
        cases += [(f"invisible {i!r}", client.command_body("/imagine", i * 2), REFUSE) for i in INVISIBLE]
        cases += [
            (f"steps {n}", client.command_body("/imagine", f"fox steps: {n}"), REFUSE) for n in BAD_NUMBERS
        ]
        cases += [
            ("cancel ٣", client.command_body("/genbot", "cancel ٣"), REFUSE),
            ("status huge", client.command_body("/genbot", "status " + "9" * 40), REFUSE),
            ("unknown", client.command_body("/genbot", "x" * 3000), REFUSE),
            ("long", client.command_body("/imagine", "y" * 3000), REFUSE),
            ("admin by member", client.command_body("/genbot", "admin pause"), REFUSE),
            (
                "ban bad id",
                client.command_body("/genbot", "admin ban ualice", user=ADMIN, name="admin"),
                REFUSE,
            ),
            (
                "ban nul",
                client.command_body("/genbot", "admin ban <@U\x00>", user=ADMIN, name="admin"),
                REFUSE,
            ),
            (
                "ban duration",
                client.command_body(
                    "/genbot", "admin ban <@UBOB|bob> duration: ٣d", user=ADMIN, name="admin"
                ),
                REFUSE,
            ),
            (
                "ban reason",
                client.command_body(
                    "/genbot", "admin ban <@UBOB|bob> reason: " + "r" * 600, user=ADMIN, name="admin"
                ),
                REFUSE,
            ),
            (
                "audit",
                client.command_body("/genbot", "admin audit limit: ５", user=ADMIN, name="admin"),
                REFUSE,
            ),
            (
                "hostile name",
                client.command_body("/imagine", "a heron", name="al\x00ice\u202e\n" + "e" * 300),
                ACCEPT,
            ),
            ("invisible name", client.command_body("/imagine", "a crane", name="\u3164\u200b"), ACCEPT),
        ]
        cases += [
            (f"form {k}={v!r}", slack_form(client, **{k: v}), REFUSE)
            for k in ("team_id", "user_id", "channel_id")
            for v in ("", "\x00", "t1", "U\u0661", "X" * 50)
        ]
        cases += [
            (f"press {k}", slack_press(client, **{k: v}), REFUSE)
            for k, v in (
                ("team", 7),
                ("user", "UALICE"),
                ("channel", {"id": "c1"}),
                ("actions", []),
                ("actions", "x"),
                ("enterprise", 5),
                ("response_url", [1]),
                ("type", "view_submission"),
            )
        ]
        cases += [
            ("press ٣", slack_press(client, actions=[{"action_id": "genbot_cancel", "value": "٣"}]), REFUSE),
            (
                "press huge",
                slack_press(client, actions=[{"action_id": "genbot_cancel", "value": "9" * 40}]),
                REFUSE,
            ),
            (
                "press nobody's",
                slack_press(client, actions=[{"action_id": "genbot_cancel", "value": str(2**62)}]),
                REFUSE,
            ),
            (
                "press unknown",
                slack_press(client, actions=[{"action_id": "genbot_explode", "value": "1"}]),
                REFUSE,
            ),
            ("json", '{"type": "event_callback", "event": {"type": "message"}}', REFUSE),
            ("deep", "payload=" + "[" * 5000, REFUSE),
            (
                "nested",
                "payload=" + quote(json.dumps({"type": "block_actions", "user": {"id": {"id": "U1"}}})),
                REFUSE,
            ),
            ("ssl check", "ssl_check=1&token=x", EITHER),
            ("empty", "", REFUSE),
        ]

        def titled(title: str) -> str:
            return f"*{html.escape(title, quote=False)}*: "

        def answers() -> int:
            return len(fake.responses) + len(fake.called("chat.postMessage"))

        for name, body, expect in cases:
            tally.inputs += 1
            before_rows, before_queue = await last_row_id(), await queue_sizes(rt, redis)
            seen, replied = answers(), len(fake.responses)
            status, answer, _took = await client.post(body)
            if status >= 500:
                tally.problem(name, f"HTTP {status}")
                continue
            replies: list[str] = []
            if status >= 400:
                tally.api_error(name, status, json.loads(answer) if answer.startswith("{") else answer)
            elif answer:  # answered in the ack itself
                replies.append(json.loads(answer).get("text", ""))
            elif expect != EITHER:  # acked; the answer follows through response_url, or the post
                await fake.wait_until(lambda s=seen: answers() > s)
                replies += [r.get("text", "") for r in fake.responses[replied:]]
            for reply in replies:
                tally.words(name, html.unescape(reply))
                if expect == REFUSE:
                    tally.sentence(name, reply, titled=titled)
            if status < 400 and expect == REFUSE and not replies:
                tally.problem(name, "accepted without a word: expected a refusal")
            if expect == REFUSE and await queue_sizes(rt, redis) != before_queue:
                tally.problem(name, "the queue changed")
            await check_new_rows(tally, name, before_rows, expect if status < 400 else REFUSE)

        # unsigned, badly signed, stale and hostile signature headers: 401, never more
        body = client.command_body("/imagine", "a forged fox")
        for headers in (
            {},
            {"X-Slack-Request-Timestamp": str(int(time.time()))},
            {"X-Slack-Request-Timestamp": "soon", "X-Slack-Signature": "v0=" + "0" * 64},
            {"X-Slack-Request-Timestamp": "١٧٠٠٠٠٠٠٠٠", "X-Slack-Signature": "v0=" + "0" * 64},
            {"X-Slack-Request-Timestamp": str(int(time.time())), "X-Slack-Signature": "v0=é"},
            {"X-Slack-Request-Timestamp": str(int(time.time())), "X-Slack-Signature": "v0=" + "0" * 64},
            {"X-Slack-Request-Timestamp": "9" * 40, "X-Slack-Signature": "v1=x"},
        ):
            tally.inputs += 1
            async with http.post(
                client.url,
                data=body.encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
            ) as resp:
                if resp.status != 401:
                    tally.problem(f"headers {headers!r:.60}", f"HTTP {resp.status}")
        for secret, ts in (
            (SECRET + "x", None),
            (SECRET, int(time.time()) - 400),
            (SECRET, int(time.time()) + 400),
        ):
            tally.inputs += 1
            if (status := (await client.post(body, secret=secret, timestamp=ts))[0]) != 401:
                tally.problem(f"signature {secret[-2:]} {ts}", f"HTTP {status}")
        tally.inputs += 1
        big = client.command_body("/imagine", "z" * (1024 * 1024))
        if (status := (await client.post(big))[0]) != 413:
            tally.problem("1 MiB", f"HTTP {status}")

    sent = json.dumps(
        [c.args for c in fake.calls if c.method in ("chat.postMessage", "chat.update", "respond")],
        ensure_ascii=False,
    )
    for ping in SLACK_PINGS.findall(sent):
        tally.problem("sent to Slack", f"an unescaped {ping!r}")
    tally.done(minimum=100)


# -- (c) Discord --------------------------------------------------------------------------------

DISCORD_PINGS = re.compile(r"@(everyone|here)|<@[!&]?[0-9]")


def discord_texts(payload: Any) -> list[str]:
    """Every text a message payload shows: content, and each embed's title, description,
    fields and footer."""
    if not isinstance(payload, dict):
        return []
    texts = [payload.get("content") or ""]
    for embed in payload.get("embeds") or []:
        texts += [
            embed.get("title") or "",
            embed.get("description") or "",
            (embed.get("footer") or {}).get("text") or "",
        ]
        texts += [f.get("value") or "" for f in embed.get("fields") or []]
    return texts


async def test_discord_interactions(
    redis_server: EmbeddedRedis, redis: Redis, pg_url: str, tmp_path: Path
) -> None:
    rng = random.Random(SEED + 2)
    tally = Tally("discord")

    # the pure translation, on payloads as discord.py parses them
    async def no_blob(_key: str) -> None:
        return None

    parser = GenbotClient(handler=None, specs=SPECS, blobs=no_blob)  # type: ignore[arg-type]
    parser._connection.user = ClientUser(state=parser._connection, data=BOT_USER)  # type: ignore[arg-type]
    names = [*CONTROLS, *INVISIBLE, *SURROGATES, *PINGS, *LEGIT, "n" * 500, ""]
    for name in names:
        for field_name in ("nick", "global_name", "username"):
            tally.inputs += 1
            payload = interaction_payload(name="imagine", options={"prompt": "fox"})
            target = payload["member"] if field_name == "nick" else payload["member"]["user"]
            target[field_name] = f"x{name}" if field_name == "username" else name
            try:
                interaction = discord.Interaction(data=payload, state=parser._connection)  # type: ignore[arg-type]
                request = request_of(interaction, "imagine", {"prompt": name}, [])
            except GenbotError as exc:
                tally.sentence(f"{field_name} {name!r}", exc.text.what)
                continue
            except Exception as exc:
                tally.problem(f"{field_name} {name!r}", f"raised {exc!r}")
                continue
            shown = request.actor.display_name
            if not clean_text(shown) or not visible(shown) or len(shown) > 80:
                tally.problem(f"{field_name} {name!r}", f"display name {shown!r}")

    # interactions through the real client against the fake REST API, on PostgreSQL
    fake = FakeDiscord()
    await fake.start()
    try:
        async with discord_stack(fake, redis_server, pg_url, tmp_path, worker=False) as stack:
            cases: list[tuple[str, dict[str, Any], str]] = []
            cases += [(f"prompt fox{c!r}", {"prompt": f"fox{c}tail"}, ACCEPT) for c in CONTROLS]
            cases += [(f"prompt {p}", {"prompt": f"look {p} **here**"}, ACCEPT) for p in PINGS]
            cases += [(f"negative {p}", {"prompt": "owl", "negative": p}, ACCEPT) for p in PINGS[:3]]
            cases += [(f"prompt {t}", {"prompt": t}, ACCEPT) for t in LEGIT[:4]]
            cases += [(f"invisible {i!r}", {"prompt": i * 2}, REFUSE) for i in INVISIBLE]
            cases += [(f"gen {p!r}", {"prompt": p}, e) for p, e in generated_prompts(rng, 16)]
            cases += [
                ("too long", {"prompt": "q" * 1001}, REFUSE),
                ("size", {"prompt": "fox", "size": "５１２x５１２"}, REFUSE),
                ("negative invisible", {"prompt": "fox", "negative": "\u200b"}, REFUSE),
            ]
            for i, (name, options, expect) in enumerate(cases):
                tally.inputs += 1
                user = f"30000000000000{1000 + i}"
                payload = interaction_payload(name="imagine", options=options, user_id=user, username=f"u{i}")
                payload["member"]["nick"] = rng.choice([None, "\u200b", "Ann\x00", "@everyone", "\u3164"])
                await deliver(stack, tally, name, payload, expect)
            bob = Picked("300000000000009999", "bob")
            admin_cases: list[tuple[str, dict[str, Any]]] = [
                ("admin ban", {"member": bob, "reason": "spam\x00 @everyone " + "r" * 600}),
                ("admin ban", {"member": bob, "duration": "٣d"}),
                ("admin ban", {"member": bob, "reason": "\u200b", "duration": "1e3h"}),
                ("admin audit", {"limit": 5}),
                ("admin block", {"term": "\ufdfa" * 10}),
                ("admin unblock", {"term": "@everyone" * 20}),
                ("admin cancel", {"job": 2**53 - 1}),
                ("cancel", {"job": 2**53 - 1}),
                ("status", {"job": 2**53 - 1}),
            ]
            for i, (command, options) in enumerate(admin_cases):
                tally.inputs += 1
                payload = interaction_payload(
                    name=command, options=options, permissions="32", user_id=f"30000000000000{2000 + i}"
                )
                await deliver(stack, tally, f"{command} {options!r:.40}", payload, EITHER)
            status_message = next(iter(stack.fake.messages.values()))
            for i, custom_id in enumerate(
                ("genbot:cancel:99999999999999999999", "genbot:reroll:9007199254740993", "genbot:cancel:0")
            ):
                tally.inputs += 1
                # a status message carrying that button (discord.py dispatches only what it shows)
                button = {"type": 2, "style": 4, "label": "Cancel", "custom_id": custom_id}
                message = {**status_message, "components": [{"type": 1, "components": [button]}]}
                payload = button_payload(custom_id, message, user_id=f"30000000000000{3000 + i}")
                await deliver(stack, tally, custom_id, payload, REFUSE)
    finally:
        await fake.stop()
    for sent in fake.requests:  # what reached Discord: no mention, nothing too long
        if sent.method in ("POST", "PATCH") and sent.path.startswith(("/webhooks/", "/channels/")):
            body = sent.json or {}
            if body.get("allowed_mentions", {}).get("parse") != []:
                tally.problem(sent.route, f"allowed_mentions {body.get('allowed_mentions')!r}")
            if len(body.get("content") or "") > 2000:
                tally.problem(sent.route, "content beyond 2,000 characters")
            for shown in discord_texts(body):
                for ping in DISCORD_PINGS.findall(shown):
                    tally.problem(sent.route, f"an unescaped mention {ping!r} in {shown[:80]!r}")
    tally.done(minimum=60)


async def deliver(stack: Any, tally: Tally, name: str, payload: dict[str, Any], expect: str) -> None:
    """One interaction through the client's parser; waits for its answer (the status message or a
    reply to the member alone) and checks it."""
    token = payload["token"]
    before_rows, before = await last_row_id(), len(stack.fake.requests)
    answers = re.compile(rf"^/webhooks/{APP_ID}/{re.escape(token)}(/messages/@original)?$")

    def answered() -> list[Any]:
        return [
            r for r in stack.fake.requests[before:] if answers.match(r.path) and r.method in ("POST", "PATCH")
        ]

    stack.deliver(payload)
    try:
        got = await stack.until(answered, timeout=20)
    except AssertionError:
        tally.problem(name, "no answer")
        return
    reply = got[-1].json or {}
    content = reply.get("content") or ""
    if content:
        tally.words(name, content)
        if expect == REFUSE:
            tally.sentence(name, content, titled=lambda t: f"**{t}**: ")
    elif expect == REFUSE:
        tally.problem(name, "answered with a status message: expected a refusal")
    # the status message of an accepted prompt is stored with the row (after the post)
    await check_new_rows(tally, name, before_rows, expect if expect != EITHER else EITHER)
