"""A plugin whose jobs end in several images (``/grid count: N``) or in a file (``/document
name``), written to a test's folder and importable as ``plugin_results`` while it runs: settings
``plugins={"modules": ["plugin_results:plugin"]}``."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.plugin_path import on_path

PLUGIN = """
import io
from PIL import Image
from bot.api import Command, FileResult, ImagesResult, JobKind, Option, Plugin

def png(width, height, colour):
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "PNG")
    return out.getvalue()

async def grid(job):
    count = int(job.options.get("count", 4))
    return ImagesResult(tuple(png(30 + n, 20, (n * 20, 0, 0)) for n in range(count)))

async def document(job):
    if job.text == "empty":
        return FileResult(b"", "empty.txt")
    return FileResult(b"<script>alert(1)</script>", job.text + "\\x00.html", "text/html; charset=utf-8")

plugin = Plugin(
    name="results",
    commands=(
        Command("grid", "Several images", (Option("count", "integer", "How many", min=1, max=20),), job="grid"),
        Command("document", "A file", (Option("name", "string", "Its name", required=True),), job="document"),
    ),
    jobs=(JobKind("grid", grid, verb="Drawing"), JobKind("document", document, verb="Writing")),
)
"""


@pytest.fixture
def results_module(tmp_path: Path) -> Iterator[None]:
    (tmp_path / "plugin_results.py").write_text(textwrap.dedent(PLUGIN))
    with on_path(tmp_path, "plugin_results"):
        yield
