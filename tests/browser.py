"""Headless Chromium for the browser tests and the README screenshot (Debian's chromium, driven
by Playwright with ``executable_path``: Playwright's own browser download is not needed)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright

CHROMIUM = os.environ.get("GENBOT_TEST_CHROMIUM", "/usr/bin/chromium")
#: As root, in a sandbox without a network: no sandbox, no GPU, nothing that phones home.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    found = shutil.which(CHROMIUM)
    if found:
        return found
    message = f"no Chromium at {CHROMIUM!r} (install chromium or set GENBOT_TEST_CHROMIUM)"
    if os.environ.get("CI"):
        pytest.fail(message + "; CI must run the browser tests")
    pytest.skip(message)


@pytest_asyncio.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    """The session's headless Chromium (a fixture of every test, through tests/conftest.py)."""
    executable = chromium_path()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()
