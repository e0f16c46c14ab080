"""Write budgets shared by every bot process: token buckets in Redis (the :class:`~bot.ports.Budgets`
port).

One bucket per scope (``<kind>:<key>``, say ``slack:channel:C123``) holds up to ``burst`` tokens and
refills at ``per_s``. :data:`TAKE` takes every spend of one write at once, or none, and tells how
long to wait otherwise, on Redis's clock so that every host agrees. A 429 puts a hold on its scope
(a key that expires after ``Retry-After``), which every process honours.

A write may cost more than a bucket's burst (a Slack image: the upload and the edit); it is taken
when the bucket is full and leaves it in debt, so the writes after it wait their turn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from redis.asyncio import Redis

from bot.ports import Rate, Spend
from jobs.connections import unavailable_on_outage

#: KEYS: bucket and hold key of each spend, in pairs. ARGV: per spend its rate (tokens per
#: second), burst and cost. Returns "0" when taken, else the seconds to wait (nothing taken).
TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local n = #KEYS / 2
local wait = 0
local level = {}
for i = 1, n do
  local held = redis.call('PTTL', KEYS[2 * i])
  if held > 0 then wait = math.max(wait, held / 1000) end
  local rate = tonumber(ARGV[3 * i - 2])
  local burst = tonumber(ARGV[3 * i - 1])
  local cost = tonumber(ARGV[3 * i])
  local state = redis.call('HMGET', KEYS[2 * i - 1], 'tokens', 'at')
  local tokens = tonumber(state[1]) or burst
  local at = tonumber(state[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
  level[i] = tokens
  local need = math.min(cost, burst)
  if tokens < need then wait = math.max(wait, (need - tokens) / rate) end
end
if wait > 0 then return tostring(wait) end
for i = 1, n do
  local rate = tonumber(ARGV[3 * i - 2])
  local burst = tonumber(ARGV[3 * i - 1])
  local tokens = level[i] - tonumber(ARGV[3 * i])
  redis.call('HSET', KEYS[2 * i - 1], 'tokens', tostring(tokens), 'at', tostring(now))
  redis.call('PEXPIRE', KEYS[2 * i - 1], math.ceil((burst - tokens) / rate * 1000) + 1000)
end
return '0'
"""


@unavailable_on_outage
class RedisBudgets:
    """Token buckets for the kinds in ``rates``, under ``prefix``. A spend of a kind not in
    ``rates`` costs nothing (a budget the settings leave out is unlimited)."""

    def __init__(self, redis: Redis, prefix: str, rates: dict[str, Rate]) -> None:
        self.redis = redis
        self.prefix = prefix
        self.rates = rates
        self._take = redis.register_script(TAKE)

    def _bucket(self, scope: str) -> str:
        return f"{self.prefix}:budget:{scope}"

    def _hold(self, scope: str) -> str:
        return f"{self.prefix}:budget-hold:{scope}"

    async def take(self, spends: Sequence[Spend]) -> float:
        keys: list[str] = []
        args: list[float | int] = []
        for spend in spends:
            rate = self.rates.get(spend.kind)
            if rate is None:
                continue
            keys += [self._bucket(spend.scope), self._hold(spend.scope)]
            args += [rate.per_s, rate.burst, spend.cost]
        if not keys:
            return 0.0
        return float(await self._take(keys=keys, args=args))

    async def hold(self, scope: str, seconds: float) -> None:
        """Hold ``scope`` for ``seconds``; a longer hold already there stays."""
        ms = max(1, math.ceil(seconds * 1000))
        held = await self.redis.pttl(self._hold(scope))
        if held < ms:
            await self.redis.set(self._hold(scope), "1", px=ms)
