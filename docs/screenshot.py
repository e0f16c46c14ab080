"""Take docs/local-chat.png: the local chat with one image being generated and one queued.

Runs the whole of ``genbot dev`` in this process (an embedded redis-server, SQLite in a temporary
directory, the demo backend at a realistic 0.15 s per step, one worker and the renderer), drives
the page in headless Chromium through Playwright as two members, and saves a 1280x1500 screenshot.
A first image is finished before the other two start; at this window size it has scrolled up out
of view, as it would in the chat.

    .venv/bin/python docs/screenshot.py [--out docs/local-chat.png] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from playwright.async_api import Locator, Page, async_playwright, expect

from bot.app import Runtime, runtime, serve_bot, serve_worker
from bot.config import load_settings
from bot.embedded_redis import embedded_redis
from storage import db
from tests.browser import CHROMIUM, CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parent.parent

VIEWPORT = {"width": 1280, "height": 1500}
expect.set_options(timeout=60_000)


@contextlib.asynccontextmanager
async def stack(rt: Runtime) -> AsyncIterator[str]:
    """The chat, the renderer and one worker; yields the chat's URL."""
    stop = asyncio.Event()
    listening: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    tasks = [
        asyncio.create_task(serve_worker(rt, stop)),
        asyncio.create_task(serve_bot(rt, stop, on_listening=listening.set_result)),
    ]
    try:
        port = await asyncio.wait_for(listening, 15)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)


async def send(page: Page, text: str) -> None:
    box = page.locator("#input")
    await box.fill(text)
    async with page.expect_response(lambda r: r.url.endswith("/api/command")):
        await box.press("Enter")


async def act_as(page: Page, member: str) -> None:
    await page.locator("#member").select_option(member)
    await expect(page.locator("#conn")).to_have_attribute("data-conn", "connected")


def card(page: Page, prompt: str) -> Locator:
    return page.locator("#message-list .status-card").filter(has=page.locator(".prompt", has_text=prompt))


async def scene(page: Page) -> None:
    """Alice's fox is done, Bob's lighthouse is half way, Alice's owl waits behind it, and Alice
    is typing the next command."""
    await act_as(page, "alice")
    await send(page, "/imagine a red fox in snow, watercolor steps: 12")
    fox = card(page, "a red fox in snow")
    await expect(fox).to_have_attribute("data-state", "succeeded")
    await expect(fox.locator("img.result")).to_have_js_property("complete", True)

    await act_as(page, "bob")
    await send(page, "Love the fox! Trying a lighthouse next.")
    await send(page, "/imagine a lighthouse on a cliff at dusk, oil painting steps: 40")
    await act_as(page, "alice")
    await send(page, "/imagine a green owl in a pine tree size: 768x512 steps: 25")

    lighthouse = card(page, "a lighthouse")
    await expect(lighthouse.locator(".headline")).to_have_text(re.compile(r"Generating · ([4-9]\d)%"))
    await expect(lighthouse.locator("img.preview")).to_have_js_property("complete", True)
    await expect(card(page, "a green owl").locator(".headline")).to_have_text(
        re.compile(r"^Queued · #1 in line")
    )
    await page.locator("#input").fill("/imagine a blue whale ")  # shows the option hint
    await expect(page.locator("#hint")).to_be_visible()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "local-chat.png")
    parser.add_argument("--chromium", default=CHROMIUM)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="genbot-screenshot-") as tmp:
        async with embedded_redis(Path(tmp) / "redis") as redis:
            settings = load_settings(
                _env_file=None,
                platform="local",
                redis={"url": redis.url},
                database={"url": f"sqlite://{Path(tmp) / 'genbot.sqlite3'}"},
                blobs={"dir": Path(tmp) / "blobs"},
                backend={"name": "demo", "demo_step_delay_s": 0.15},
                worker={"progress_interval_s": 0.5},
                renderer={"min_edit_interval_s": 0.5},
                local={"host": "127.0.0.1", "port": 0},
            )
            await db.migrate(settings.database.url)
            async with (
                runtime(settings) as rt,
                stack(rt) as base_url,
                async_playwright() as playwright,
            ):
                browser = await playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
                try:
                    context = await browser.new_context(viewport=VIEWPORT)
                    page = await context.new_page()
                    await page.goto(base_url)
                    await scene(page)
                    await page.screenshot(path=str(args.out))
                finally:
                    await browser.close()
    print(f"saved {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
