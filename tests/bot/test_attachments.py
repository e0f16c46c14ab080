"""File options (``attachment`` and ``image``) in the core: the adapter's reference is fetched
through the command's responder, only once the member may ask; the file is checked (size, a
picture Pillow reads, pixels), kept in the blob store by its content, and reaches ``prepare`` as an
``Attachment`` and the job as its bytes. Every refusal is one sentence and leaves nothing behind."""

from __future__ import annotations

import hashlib
import io
import textwrap
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
from PIL import Image
from redis.asyncio import Redis

from bot.app import Runtime, build_runner, runtime
from bot.attachments import Attachment
from bot.embedded_redis import EmbeddedRedis
from bot.errors import ErrorCode, GenbotError
from bot.models import Actor, Ban, CommandRequest
from bot.moderation import blocked_term
from bot.ports import Upload
from storage.models import GenerationRow
from tests.bot.test_service import Recorder
from tests.conftest import make_settings
from tests.plugin_path import on_path

ALICE = Actor("local", "local", "alice", "Alice")

PLUGIN = """
from bot.api import Command, JobKind, JobRequest, Option, Plugin, TextResult

async def measure(job):
    picture = job.attachment("picture")
    data = await job.read(picture)
    extra = ""
    if "notes" in job.options:
        extra = " + " + (await job.read(job.attachment("notes"))).decode()
    return TextResult(f"{picture.name}: {len(data)} bytes, {picture.width}x{picture.height}{extra}")

def prepare(call):
    return JobRequest(call.options["picture"].name, dict(call.options))

plugin = Plugin(
    name="files",
    commands=(
        Command(
            "measure",
            "Measure a picture",
            (
                Option("picture", "image", "A picture", required=True),
                Option("notes", "attachment", "Any file"),
                Option("caption", "string", "A caption"),
            ),
            job="measure",
            prepare=prepare,
        ),
    ),
    jobs=(JobKind("measure", measure, verb="Measuring"),),
)
"""


def picture(width: int = 8, height: int = 6, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(out, fmt)
    return out.getvalue()


class Files(Recorder):
    """A responder whose platform holds ``files`` (reference: upload); it records what was fetched."""

    def __init__(self, files: dict[str, Upload]) -> None:
        super().__init__()
        self.files = files
        self.fetched: list[tuple[str, int]] = []

    async def fetch(self, ref: str, max_bytes: int) -> Upload:
        self.fetched.append((ref, max_bytes))
        if ref not in self.files:
            raise GenbotError(ErrorCode.INVALID_OPTION, "That file is not here.")
        return self.files[ref]


@pytest.fixture
def files_module(tmp_path: Path) -> Iterator[None]:
    (tmp_path / "plugin_files.py").write_text(textwrap.dedent(PLUGIN))
    with on_path(tmp_path, "plugin_files"):
        yield


@pytest_asyncio.fixture
async def frt(
    files_module: None, redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path
) -> AsyncIterator[Runtime]:
    settings = make_settings(
        redis_server.url,
        sqlite_url,
        tmp_path,
        plugins={"modules": ["plugin_files:plugin"]},
        limits={"attachment_max_bytes": 4000, "image_pixels_max": 10_000},
    )
    async with runtime(settings) as rt:
        await rt.core.check_tickets()
        yield rt


async def measure(rt: Runtime, files: dict[str, Upload], **options: str) -> Files:
    out = Files(files)
    await rt.core.handle(CommandRequest(ALICE, "general", "measure", options), out)
    return out


def inputs(rt: Runtime) -> list[Path]:
    folder = rt.settings.blobs.dir / "inputs"
    return sorted(folder.iterdir()) if folder.exists() else []


async def test_a_picture_is_fetched_checked_kept_and_read_by_its_job(frt: Runtime) -> None:
    data = picture(8, 6, "JPEG")
    notes = Upload("notes.txt", b"three words here", "text/plain; charset=utf-8")
    out = await measure(
        frt, {"ref-1": Upload("fox.jpg", data, "image/png"), "ref-2": notes}, picture="ref-1", notes="ref-2"
    )
    assert out.errors == [] and [r for r, _ in out.fetched] == ["ref-1", "ref-2"]
    assert {limit for _, limit in out.fetched} == {4000}
    row = await GenerationRow.get(id=out.posted[0].job)
    digest = hashlib.sha256(data).hexdigest()
    kept = Attachment.of(row.options["picture"])
    # the type is the picture's own (Pillow), not the one the platform claimed
    assert kept == Attachment("fox.jpg", "image/jpeg", len(data), f"inputs/{digest}.jpeg", 8, 6)
    assert Attachment.of(row.options["notes"]).content_type == "text/plain"
    assert Attachment.of(row.options["notes"]).blob.endswith(".txt")
    assert row.prompt == "fox.jpg"
    assert await build_runner(frt).run(row.id) == "succeeded"
    done = await frt.store.get(row.id)
    assert done is not None
    assert done.meta["text"] == f"fox.jpg: {len(data)} bytes, 8x6 + three words here"


async def test_the_same_file_twice_is_kept_once(frt: Runtime) -> None:
    upload = Upload("a.png", picture())
    for _ in range(2):
        assert (await measure(frt, {"r": upload}, picture="r")).errors == []
    assert len(inputs(frt)) == 1


@pytest.mark.parametrize(
    ("upload", "sentence"),
    [
        (
            Upload("notes.png", b"not pixels at all"),
            "notes.png is not a picture genbot can read: attach a PNG, JPEG, WebP or GIF.",
        ),
        (Upload("empty.png", b""), "empty.png is empty: attach the file again."),
        (Upload("big.png", b"x" * 4001), "big.png (4 kB) is too large: the limit is 4 kB."),
        (
            Upload("wide.png", picture(200, 60)),
            "wide.png is 200x60 pixels; the limit is 10,000 pixels. Attach a smaller picture.",
        ),
        (
            Upload("cut.png", picture(20, 20)[:-30]),
            "cut.png is not a picture genbot can read: attach a PNG, JPEG, WebP or GIF.",
        ),
        (
            Upload("", b"BM" + b"\x00" * 60),
            "file is not a picture genbot can read: attach a PNG, JPEG, WebP or GIF.",
        ),
    ],
)
async def test_files_that_do_not_fit_are_refused_with_one_sentence_and_kept_nowhere(
    frt: Runtime, upload: Upload, sentence: str
) -> None:
    out = await measure(frt, {"r": upload}, picture="r")
    assert [e.what for e in out.errors] == [sentence] and out.posted == []
    assert await GenerationRow.all().count() == 0
    assert inputs(frt) == []


async def test_a_file_the_platform_does_not_have_is_its_adapters_sentence(frt: Runtime) -> None:
    out = await measure(frt, {}, picture="gone")
    assert [e.what for e in out.errors] == ["That file is not here."]
    assert await GenerationRow.all().count() == 0


async def test_a_banned_member_or_a_blocked_caption_downloads_nothing(frt: Runtime) -> None:
    await frt.moderation.add_term("local", "local", blocked_term("weasel"), "admin")
    out = await measure(frt, {"r": Upload("a.png", picture())}, picture="r", caption="a weasel")
    assert [e.code for e in out.errors] == [ErrorCode.CONTENT_BLOCKED] and out.fetched == []
    await frt.core.ban(Ban("local", "local", "alice", "spam", "admin", datetime.now(UTC), None))
    out = await measure(frt, {"r": Upload("a.png", picture())}, picture="r")
    assert [e.code for e in out.errors] == [ErrorCode.BANNED] and out.fetched == []
    assert await GenerationRow.all().count() == 0 and inputs(frt) == []


async def test_a_missing_picture_is_asked_for(frt: Runtime) -> None:
    out = await measure(frt, {}, caption="hello")
    assert [e.what for e in out.errors] == ["The picture is missing: a picture."] and out.fetched == []
