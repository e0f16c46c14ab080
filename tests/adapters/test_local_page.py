"""The local chat page itself, driven in headless Chromium through Playwright: typing commands,
live status cards, the Cancel button, rendering member text as text, and member switching.

The whole stack runs in-process (real Redis, SQLite, worker and renderer). The browser is the
Debian ``chromium`` (``GENBOT_TEST_CHROMIUM`` names another binary): without one these tests skip,
except under CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Locator, Page, expect
from redis.asyncio import Redis

from bot.app import Runtime, runtime
from bot.embedded_redis import EmbeddedRedis
from bot.models import State
from storage.models import GenerationRow
from tests.conftest import make_settings
from tests.stack import stack_running

pytestmark = pytest.mark.browser

TIMEOUT_MS = 20_000
expect.set_options(timeout=TIMEOUT_MS)

# Status cards are replaced on every edit and some states last only a few milliseconds, so the page
# records every distinct (state, headline, progress) each card goes through; tests read the log.
CARD_LOG_SCRIPT = """
window.__cardLog = {};
new MutationObserver(() => {
  for (const card of document.querySelectorAll('#message-list .status-card')) {
    const bar = card.querySelector('.progress');
    const entry = {
      state: card.dataset.state,
      headline: card.querySelector('.headline')?.textContent ?? '',
      progress: bar ? Number(bar.getAttribute('aria-valuenow')) : null,
      barShown: bar ? bar.getBoundingClientRect().width > 0 : false,
    };
    const log = (window.__cardLog[card.dataset.job] ??= []);
    const last = log[log.length - 1];
    if (!last || JSON.stringify(last) !== JSON.stringify(entry)) log.push(entry);
  }
}).observe(document, { childList: true, subtree: true });
"""

# Everything the page's Content-Security-Policy blocks (a script, a style, an image, the
# WebSocket) is recorded; open_chat fails the test if anything was.
CSP_LOG_SCRIPT = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`);
});
"""


@contextlib.asynccontextmanager
async def open_chat(browser: Browser, base_url: str) -> AsyncIterator[Page]:
    """The chat page, connected and acting as the first member (Alice). Fails the test if the
    page throws a JavaScript error or its Content-Security-Policy blocks anything."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    await context.add_init_script(CARD_LOG_SCRIPT)
    await context.add_init_script(CSP_LOG_SCRIPT)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    violations: list[str] = []
    try:
        response = await page.goto(base_url)
        assert (
            response is not None and "frame-ancestors 'none'" in response.headers["content-security-policy"]
        )
        await expect(page.locator("#conn")).to_have_attribute("data-conn", "connected")
        await expect(page.locator("#member")).to_have_value("alice")
        yield page
        violations = list(await page.evaluate("window.__cspViolations"))
    finally:
        await context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
    assert not violations, f"blocked by the Content-Security-Policy: {violations}"


@pytest_asyncio.fixture
async def page(rt: Runtime, browser: Browser) -> AsyncIterator[Page]:
    async with stack_running(rt) as base_url, open_chat(browser, base_url) as page:
        yield page


async def send(page: Page, text: str, *, keystrokes: bool = False) -> None:
    """Type ``text`` into the message box and press Enter; returns once the server answered."""
    box = page.locator("#input")
    if keystrokes:
        await box.press_sequentially(text)
    else:
        await box.fill(text)
    async with page.expect_response(lambda r: r.url.endswith("/api/command")) as answer:
        await box.press("Enter")
    response = await answer.value
    assert response.ok, await response.text()
    await expect(box).to_have_value("")


def cards(page: Page) -> Locator:
    return page.locator("#message-list .status-card")


def card_for(page: Page, prompt: str) -> Locator:
    return cards(page).filter(has=page.locator(".prompt", has_text=prompt))


def ephemeral(page: Page, text: str) -> Locator:
    return page.locator("#message-list .message.ephemeral").filter(has_text=text)


async def card_log(page: Page, card: Locator) -> list[dict[str, Any]]:
    job = await card.get_attribute("data-job")
    return list(await page.evaluate("(job) => window.__cardLog[job] || []", job))


async def generation_rows() -> int:
    return await GenerationRow.all().count()


async def test_imagine_card_goes_from_queue_to_image(page: Page) -> None:
    await send(page, "/imagine a red fox in snow steps: 10", keystrokes=True)

    card = card_for(page, "a red fox in snow")
    await expect(card).to_have_count(1)
    await expect(card.locator(".requester")).to_have_text("Alice")
    await expect(card.locator(".details")).to_contain_text("10 steps")
    await expect(card).to_have_attribute("data-state", "succeeded")
    await expect(card.locator(".headline")).to_have_text(re.compile(r"^Done"))
    result = card.locator("img.result")
    await expect(result).to_be_visible()
    await expect(result).to_have_js_property("complete", True)
    await expect(result).to_have_js_property("naturalWidth", 512)
    await expect(card.locator('button[data-action="cancel"]')).to_have_count(0)
    await expect(card.locator(".progress")).to_have_count(0)

    seen = await card_log(page, card)
    states = [e["state"] for e in seen]
    assert states[0] in ("queued", "running"), seen
    assert states[-1] == "succeeded", seen
    running = [e for e in seen if e["state"] == "running"]
    assert any(e["progress"] is not None and e["barShown"] for e in running), seen
    assert any(re.fullmatch(r"Generating · \d+%", e["headline"]) for e in running), seen
    assert len({e["headline"] for e in seen}) >= 3, seen


async def test_cancel_a_queued_job_moves_the_ones_behind_it_up(
    browser: Browser,
    redis_server: EmbeddedRedis,
    sqlite_url: str,
    tmp_path: Path,
    redis: Redis,
) -> None:
    # 40 steps of 0.2 s: the first job runs for 8 s, long enough to cancel the job behind it and
    # see the last one move up while the first is still running.
    settings = make_settings(redis_server.url, sqlite_url, tmp_path, backend={"demo_step_delay_s": 0.2})
    async with (
        runtime(settings) as rt,
        stack_running(rt) as base_url,
        open_chat(browser, base_url) as page,
    ):
        for prompt in ("first cat", "second cat", "third cat"):
            await send(page, f"/imagine {prompt} steps: 40")
        first, second, third = (card_for(page, p) for p in ("first cat", "second cat", "third cat"))
        await expect(first).to_have_attribute("data-state", "running")
        await expect(second.locator(".headline")).to_have_text(re.compile(r"^Queued · #1 in line"))
        await expect(third.locator(".headline")).to_have_text(re.compile(r"^Queued · #2 in line"))

        await second.locator('button[data-action="cancel"]').click()

        await expect(second).to_have_attribute("data-state", "cancelled")
        await expect(second.locator(".headline")).to_have_text("Cancelled")
        await expect(second.locator('button[data-action="cancel"]')).to_have_count(0)
        job = int(await second.get_attribute("data-job") or 0)
        await expect(ephemeral(page, f"Cancelled job {job}.")).to_be_visible()
        # The third job moves up while the first is still running.
        await expect(third.locator(".headline")).to_have_text(re.compile(r"^Queued · #1 in line"))
        await expect(first).to_have_attribute("data-state", "running")
        gen = await rt.store.get(job)
        assert gen is not None and gen.state is State.CANCELLED


async def test_member_text_is_shown_as_text_and_bad_input_only_as_a_reply(page: Page) -> None:
    tricky = '<img src=x onerror="window.__pwned=1"><b>bold</b> @everyone'
    await send(page, f"/imagine {tricky}")
    card = card_for(page, "@everyone")
    await expect(card).to_have_count(1)
    await expect(card.locator(".prompt")).to_have_text(tricky)
    await expect(card).to_have_attribute("data-state", "succeeded")
    await expect(card.locator("img.result")).to_have_js_property("complete", True)
    messages = page.locator("#message-list")
    await expect(messages.locator("b")).to_have_count(0)
    await expect(messages.locator('img[src="x"]')).to_have_count(0)
    assert await page.evaluate("typeof window.__pwned") == "undefined"

    rows = await generation_rows()
    for command, words in (
        ("/imagine", "The prompt is missing"),
        ("/imagine x size: 3x3", "Size must be one of"),
    ):
        await send(page, command)
        reply = ephemeral(page, words)
        await expect(reply).to_have_count(1)
        await expect(reply.locator(".ephemeral-note")).to_have_text("Only you can see this")
        await expect(cards(page)).to_have_count(1)
        assert await generation_rows() == rows, command


async def test_ephemeral_replies_stay_with_their_member(page: Page, browser: Browser) -> None:
    await send(page, "/imagine")
    await expect(ephemeral(page, "The prompt is missing")).to_be_visible()
    await send(page, "hello from Alice")

    await page.locator("#member").select_option("bob")
    await expect(page.locator("#conn")).to_have_attribute("data-conn", "connected")
    await expect(page.locator("#message-list")).to_contain_text("hello from Alice")
    await expect(page.locator("#message-list .ephemeral")).to_have_count(0)

    # A reply sent to Alice (in another tab) while Bob watches does not reach Bob either.
    async with open_chat(browser, page.url) as alice:
        await send(alice, "/imagine x size: 3x3")
        await expect(ephemeral(alice, "Size must be one of")).to_be_visible()
        await send(alice, "second hello from Alice")
    await expect(page.locator("#message-list")).to_contain_text("second hello from Alice")
    await expect(page.locator("#message-list .ephemeral")).to_have_count(0)

    await send(page, "/imagine a blue whale steps: 5")
    await expect(card_for(page, "a blue whale").locator(".requester")).to_have_text("Bob")

    await page.locator("#member").select_option("alice")
    await expect(ephemeral(page, "The prompt is missing")).to_be_visible()
    await expect(ephemeral(page, "Size must be one of")).to_be_visible()
