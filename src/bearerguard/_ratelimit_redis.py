"""Moving-window hits on one Redis (or a sentinel's master): one script call per hit, batched.

``limits`` spends a moving-window hit in two round trips per limit (the acquire
script, then the window script for the headers), each on its own pooled
connection. Here one script does both for every limit of the hit, shortest window
first, stopping at the first refusal (so a refused burst does not spend the longer
windows), and every hit made during one event-loop iteration goes to Redis in one
pipeline: a hundred concurrent requests cost one round trip, not two hundred.

The script keeps ``limits``' data exactly (a list of hit times per key, newest
first, trimmed to the limit, expiring with the window) and its answers, so
replicas running ``limits``' own code share the same budgets. Each call is atomic
in Redis, which is what lets replicas share a budget without ever overshooting it.
A cluster keeps ``limits``' path: one pipeline would span slots and nodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bearerguard._redis import Script, ScriptBatch

__all__ = ["RedisMovingWindow"]

#: KEYS: one per limit, shortest window first. ARGV: now, consume (1/0), then limit and
#: expiry per key. Returns allowed (1/0), the oldest hit in the window (or now) and the
#: hits in it, per limit, up to the first refusal. The acquire is limits'
#: acquire_moving_window.lua with amount 1; the window is its moving_window.lua.
_SCRIPT = Script("""
local now = tonumber(ARGV[1])
local consume = ARGV[2] == '1'
local out = {}
for i = 1, #KEYS do
    local key = KEYS[i]
    local limit = tonumber(ARGV[2 * i + 1])
    local expiry = tonumber(ARGV[2 * i + 2])
    local allowed = 1
    if consume then
        local entry = redis.call('lindex', key, limit - 1)
        if entry and tonumber(entry) >= now - expiry then
            allowed = 0
        else
            redis.call('lpush', key, now)
            redis.call('ltrim', key, 0, limit - 1)
            redis.call('expire', key, expiry)
        end
    end
    local target = now - expiry
    local low, high, found = 0, limit - 1, nil
    while low <= high do
        local mid = math.floor((low + high) / 2)
        local value = tonumber(redis.call('lindex', key, mid))
        if value and value >= target then
            found = mid
            low = mid + 1
        else
            high = mid - 1
        end
    end
    if found then
        out[#out + 1] = allowed
        out[#out + 1] = redis.call('lindex', key, found)
        out[#out + 1] = found + 1
    else
        out[#out + 1] = allowed
        out[#out + 1] = tostring(now)
        out[#out + 1] = 0
    end
    if allowed == 0 then
        break
    end
end
return out
""")

#: One limit's answer: allowed, the oldest hit in the window (epoch seconds), hits in it.
Window = tuple[bool, float, int]


class RedisMovingWindow:
    """Moving-window checks, each one script call in the storage's :class:`ScriptBatch`."""

    def __init__(self, batch: ScriptBatch, key_prefix: str) -> None:
        self.batch = batch
        self._prefix = key_prefix

    async def check(
        self,
        keys: Sequence[str],
        limits: Sequence[tuple[int, int]],
        now: float,
        *,
        consume: bool,
    ) -> list[Window]:
        """Spend (or only read) one hit on each ``(limit, expiry)`` of ``keys``, in order."""
        args: list[Any] = [repr(now), "1" if consume else "0"]
        for limit, expiry in limits:
            args += [limit, expiry]
        reply = await self.batch.run(_SCRIPT, [f"{self._prefix}:{k}" for k in keys], args)
        return [
            (bool(int(reply[i])), float(reply[i + 1]), int(reply[i + 2]))
            for i in range(0, len(reply), 3)
        ]
