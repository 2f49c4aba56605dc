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

import asyncio
from collections.abc import Sequence
from typing import Any

__all__ = ["RedisMovingWindow"]

#: KEYS: one per limit, shortest window first. ARGV: now, consume (1/0), then limit and
#: expiry per key. Returns allowed (1/0), the oldest hit in the window (or now) and the
#: hits in it, per limit, up to the first refusal. The acquire is limits'
#: acquire_moving_window.lua with amount 1; the window is its moving_window.lua.
_SCRIPT = """
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
"""

#: One limit's answer: allowed, the oldest hit in the window (epoch seconds), hits in it.
Window = tuple[bool, float, int]


class RedisMovingWindow:
    """Batches moving-window checks made in one loop iteration into one pipelined round trip."""

    def __init__(self, client: Any, key_prefix: str) -> None:
        self._client = client
        self._prefix = key_prefix
        self._sha = client.register_script(_SCRIPT).sha
        self._pending: list[tuple[list[str], list[Any], asyncio.Future[list[Window]]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        #: Pipelines sent and the checks they carried (for tests and the benchmarks).
        self.round_trips = 0
        self.checks = 0

    async def check(
        self,
        keys: Sequence[str],
        limits: Sequence[tuple[int, int]],
        now: float,
        *,
        consume: bool,
    ) -> list[Window]:
        """Spend (or only read) one hit on each ``(limit, expiry)`` of ``keys``, in order."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Window]] = loop.create_future()
        args: list[Any] = [repr(now), "1" if consume else "0"]
        for limit, expiry in limits:
            args += [limit, expiry]
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append(([f"{self._prefix}:{k}" for k in keys], args, future))
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(
        self, batch: list[tuple[list[str], list[Any], asyncio.Future[list[Window]]]]
    ) -> None:
        self.checks += len(batch)
        try:
            replies = await self._pipeline(batch)
            if any(_unknown_script(reply) for reply in replies):
                # A restarted (or new) Redis has no script cache: load it once, send again.
                # (redis-py's pipelined Script would ask SCRIPT EXISTS before every batch.)
                await self._client.script_load(_SCRIPT)
                replies = await self._pipeline(batch)
        except BaseException as exc:  # the connection failed: every check in it did
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else ConnectionError())
            if not isinstance(exc, Exception):
                raise
            return
        for (_, _, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its caller gave up (storage timeout)
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
                continue
            future.set_result(
                [
                    (bool(int(reply[i])), float(reply[i + 1]), int(reply[i + 2]))
                    for i in range(0, len(reply), 3)
                ]
            )

    async def _pipeline(
        self, batch: list[tuple[list[str], list[Any], asyncio.Future[list[Window]]]]
    ) -> list[Any]:
        self.round_trips += 1
        pipe = self._client.pipeline(transaction=False)
        for keys, args, _ in batch:
            pipe.evalsha(self._sha, len(keys), *keys, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    async def aclose(self) -> None:
        """Wait for pipelines in flight (their callers are owed an answer)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _unknown_script(reply: Any) -> bool:
    return type(reply).__name__ == "NoScriptError"  # redis-py's, for a script Redis lacks
