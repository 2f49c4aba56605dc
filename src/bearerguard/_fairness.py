"""Slots shared fairly between clients: a global limit, then a line served client by client.

Introspection is the one upstream call a client can trigger at will (every distinct
junk opaque token is a call), so its slots are handed out here rather than first
come, first served:

* At most ``limit`` holders at once (the endpoint and the shared HTTP pool). While a
  slot is free anyone takes it: nothing is held back from a lone busy client.
* When every slot is taken, a request waits in line up to ``wait`` seconds (instead
  of a 503 at the first busy moment), and a freed slot goes to the waiting client
  that holds the fewest: a client flooding the endpoint is served after everyone
  else, not before.
* One client may have at most ``per_client`` requests in line; beyond that its next
  one is refused at once as its own doing (a 429). The whole line is bounded too,
  and a request still waiting when its time is up gets the 503.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable

__all__ = ["ClientOverShare", "FairSlots", "NoSlot"]


class NoSlot(Exception):
    """Every slot stayed taken for the whole wait (or the line was full): our side is busy."""


class ClientOverShare(Exception):
    """This client already has its whole share of the line: its own requests must wait."""


class FairSlots:
    """At most ``limit`` concurrent holders; a freed slot goes to the least-served client.

    ``client`` ``None`` is "not known" (a caller outside any request): such callers
    share one line, with no per-client bound on it.
    """

    def __init__(self, limit: int, *, per_client: int, wait: float, max_waiting: int) -> None:
        self.limit = limit
        self.per_client = max(1, per_client)
        self.wait = wait
        self.max_waiting = max_waiting
        self.taken = 0
        self.waiting = 0
        self._held: dict[Hashable, int] = {}
        # Each waiting client's line; dict order breaks ties (first to queue, first served).
        self._lines: dict[Hashable, deque[asyncio.Future[None]]] = {}

    async def acquire(self, client: Hashable) -> None:
        """Take a slot for ``client``; raises :class:`ClientOverShare` or :class:`NoSlot`."""
        if self.taken < self.limit:  # (while anyone waits, every slot is taken)
            self.taken += 1
            self._held[client] = self._held.get(client, 0) + 1
            return
        line = self._lines.get(client)
        if client is not None and line is not None and len(line) >= self.per_client:
            raise ClientOverShare()
        if self.waiting >= self.max_waiting:
            raise NoSlot()
        waiter = asyncio.get_running_loop().create_future()
        self._lines.setdefault(client, deque()).append(waiter)
        self.waiting += 1
        try:
            async with asyncio.timeout(self.wait):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                # The slot was handed over just as the wait ended: keep it, or pass it on.
                if isinstance(exc, TimeoutError):
                    return
                self.release(client)
                raise
            waiter.cancel()
            self._leave_line(client, waiter)
            if isinstance(exc, TimeoutError):
                raise NoSlot() from None
            raise

    def release(self, client: Hashable) -> None:
        """Give the slot back: to the waiting client holding the fewest, else to the pool."""
        held = self._held.get(client, 0) - 1
        if held > 0:
            self._held[client] = held
        else:
            self._held.pop(client, None)
        if not self._lines:
            self.taken -= 1
            return
        chosen = min(self._lines, key=lambda waiting: self._held.get(waiting, 0))
        line = self._lines[chosen]
        waiter = line.popleft()
        if not line:
            del self._lines[chosen]
        self.waiting -= 1
        self._held[chosen] = self._held.get(chosen, 0) + 1
        waiter.set_result(None)  # the slot passes on: ``taken`` is unchanged

    def _leave_line(self, client: Hashable, waiter: asyncio.Future[None]) -> None:
        line = self._lines.get(client)
        if line is not None and waiter in line:
            line.remove(waiter)
            self.waiting -= 1
            if not line:
                del self._lines[client]
