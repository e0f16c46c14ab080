"""The platforms' documented rate limits, as the fakes of Slack and Discord enforce them when a test
switches them on (``FakeSlack(limits=SlackLimits())``): token buckets on the wall clock.

Slack (https://docs.slack.dev/apis/web-api/rate-limits): message writes are allowed "about 1 per second
per channel", with short bursts; ``chat.update`` is Tier 3, "50+ per minute" per workspace. A call over
its budget answers HTTP 429, ``{"ok": false, "error": "ratelimited"}`` and ``Retry-After`` in seconds.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class SlackLimits:
    channel_per_s: float = 1.0
    channel_burst: int = 3
    update_per_min: float = 50.0
    update_burst: int = 9

    def scaled(self, k: float) -> SlackLimits:
        """The same limits ``k`` times faster (a test that runs ``k`` times faster than life)."""
        return SlackLimits(
            self.channel_per_s * k, self.channel_burst, self.update_per_min * k, self.update_burst
        )


class TokenBucket:
    """``burst`` tokens, refilled at ``per_s``."""

    def __init__(self, per_s: float, burst: int) -> None:
        self.per_s = per_s
        self.burst = burst
        self.tokens = float(burst)
        self.at = time.monotonic()

    def wait(self) -> float:
        """Seconds until a token is there (0: now), refilling first."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.per_s)
        self.at = now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.per_s

    def take(self) -> None:
        self.tokens -= 1


def retry_after(seconds: float) -> str:
    """``Retry-After`` as Slack sends it: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


@dataclass(frozen=True)
class DiscordLimits:
    """Discord's (https://discord.com/developers/docs/topics/rate-limits): a bucket per route and
    its major parameter, 5 per 5 s for a channel's messages and for an interaction webhook's, and a
    global 50 requests a second for bot-token requests (interaction endpoints are outside it)."""

    channel_per_5s: int = 5
    webhook_per_5s: int = 5
    global_per_s: int = 50

    def scaled(self, k: float) -> DiscordLimits:
        """Buckets ``k`` times faster: the same counts per ``5/k`` seconds (and the global ``k`` times)."""
        return _ScaledDiscordLimits(self.channel_per_5s, self.webhook_per_5s, int(self.global_per_s * k), k)

    @property
    def speed(self) -> float:
        return 1.0


@dataclass(frozen=True)
class _ScaledDiscordLimits(DiscordLimits):
    k: float = 1.0

    @property
    def speed(self) -> float:
        return self.k
