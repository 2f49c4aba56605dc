"""FairSlots, the admission behind introspection under a flood: one rule, one test.

Unit tests of one class (the flood itself runs through the middleware against a real
issuer in test_fail_closed.py, rule 8); every wait here is bounded and short.
"""

from __future__ import annotations

import asyncio

import pytest

from bearerguard._fairness import ClientOverShare, FairSlots, NoSlot

pytestmark = pytest.mark.anyio


async def test_free_slots_are_taken_by_anyone_without_waiting() -> None:
    slots = FairSlots(3, per_client=1, wait=0.5, max_waiting=10)
    for _ in range(3):
        await slots.acquire("flooder")  # no share is held back while slots are free
    assert (slots.taken, slots.waiting) == (3, 0)


async def test_a_freed_slot_goes_to_the_waiting_client_holding_the_fewest() -> None:
    slots = FairSlots(2, per_client=5, wait=5.0, max_waiting=10)
    await slots.acquire("flooder")
    await slots.acquire("flooder")
    order: list[str] = []

    async def wait_for(client: str) -> None:
        await slots.acquire(client)
        order.append(client)

    flooder = asyncio.ensure_future(wait_for("flooder"))  # first in line...
    await asyncio.sleep(0)
    other = asyncio.ensure_future(wait_for("other"))  # ...but holds two slots already
    await asyncio.sleep(0)
    slots.release("flooder")
    await asyncio.sleep(0)
    assert order == ["other"]
    slots.release("flooder")
    await asyncio.gather(flooder, other)
    assert order == ["other", "flooder"] and slots.taken == 2


async def test_a_client_with_its_share_of_the_line_is_refused_at_once() -> None:
    slots = FairSlots(1, per_client=2, wait=5.0, max_waiting=10)
    await slots.acquire("a")
    waiting = [asyncio.ensure_future(slots.acquire("b")) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(ClientOverShare):
        await slots.acquire("b")
    # Callers outside any request (client None) share one line with no per-client bound.
    waiting += [asyncio.ensure_future(slots.acquire(None)) for _ in range(3)]
    await asyncio.sleep(0)
    assert slots.waiting == 5 and not any(task.done() for task in waiting)
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    assert slots.waiting == 0


async def test_waiting_is_bounded_in_time_and_in_length() -> None:
    slots = FairSlots(1, per_client=10, wait=0.05, max_waiting=1)
    await slots.acquire("a")
    first = asyncio.ensure_future(slots.acquire("b"))
    await asyncio.sleep(0)
    with pytest.raises(NoSlot):  # the line is full
        await slots.acquire("c")
    with pytest.raises(NoSlot):  # nothing freed within the wait
        await first
    assert (slots.taken, slots.waiting) == (1, 0)
    slots.release("a")
    assert slots.taken == 0


async def test_a_cancelled_waiter_neither_keeps_nor_loses_a_slot() -> None:
    slots = FairSlots(1, per_client=10, wait=5.0, max_waiting=10)
    await slots.acquire("a")
    gone = asyncio.ensure_future(slots.acquire("b"))
    kept = asyncio.ensure_future(slots.acquire("c"))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    slots.release("a")  # passes to "c", the only one still waiting
    await kept
    assert (slots.taken, slots.waiting) == (1, 0)
    slots.release("c")
    assert slots.taken == 0
