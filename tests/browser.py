"""Headless Chromium for the browser tests and the README screenshot (Debian's chromium, driven
by Playwright with ``executable_path``: Playwright's own browser download is not needed)."""

from __future__ import annotations

import os

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
