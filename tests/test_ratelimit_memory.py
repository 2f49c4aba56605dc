"""The O(1) in-memory moving window answers exactly as ``limits``' MemoryStorage does."""

from __future__ import annotations

import random
from types import SimpleNamespace

import limits.storage.memory
import pytest
from limits import parse
from limits.strategies import MovingWindowRateLimiter

import bearerguard._ratelimit_memory
from bearerguard._ratelimit_memory import MovingWindowMemory


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """One clock for both storages (their modules read ``time.time()``)."""
    now = SimpleNamespace(value=1_000_000.0)
    fake = SimpleNamespace(time=lambda: now.value)
    monkeypatch.setattr(limits.storage.memory, "time", fake)
    monkeypatch.setattr(bearerguard._ratelimit_memory, "time", fake)
    return now


def test_moving_window_answers_as_limits_memory_storage_does(clock: SimpleNamespace) -> None:
    ours, theirs = MovingWindowMemory(), limits.storage.MemoryStorage()
    theirs.timer.cancel()  # its pruning thread would race the shared fake clock
    rng = random.Random(13)
    keys, limit, expiry = ("a", "b", "c"), 5, 10
    for _ in range(20_000):
        key = rng.choice(keys)
        # Steps that land exactly on window edges as well as between them.
        clock.value += rng.choice((0.0, 0.5, 1.0, 2.5, float(expiry)))
        if rng.random() < 0.6:
            amount = rng.choice((1, 1, 1, 2, 6))
            assert ours.acquire_entry(key, limit, expiry, amount) == theirs.acquire_entry(
                key, limit, expiry, amount
            )
        else:
            start, count = ours.get_moving_window(key, limit, expiry)
            their_start, their_count = theirs.get_moving_window(key, limit, expiry)
            assert count == their_count
            if count:  # with nothing in the window, limits' start depends on its timer thread
                assert start == their_start


def test_moving_window_strategy_refuses_past_the_budget_and_frees_with_time(
    clock: SimpleNamespace,
) -> None:
    strategy = MovingWindowRateLimiter(MovingWindowMemory())
    item = parse("3/second")
    assert [strategy.hit(item, "k") for _ in range(4)] == [True, True, True, False]
    clock.value += 1.001
    assert strategy.hit(item, "k")
    assert strategy.get_window_stats(item, "k").remaining == 2


def test_idle_keys_are_dropped_as_other_keys_are_hit(clock: SimpleNamespace) -> None:
    storage = MovingWindowMemory()
    for i in range(1000):
        storage.acquire_entry(f"idle-{i}", 10, 60)
    clock.value += 61
    for _ in range(600):
        storage.acquire_entry("busy", 10_000, 60)
    assert len(storage._windows) == 1


def test_one_spend_answers_as_an_acquire_then_a_window_read(clock: SimpleNamespace) -> None:
    one, two = MovingWindowMemory(), MovingWindowMemory()
    rng = random.Random(7)
    for _ in range(5_000):
        clock.value += rng.choice((0.0, 0.3, 1.0, 5.0))
        key, consume = rng.choice("xy"), rng.random() < 0.8
        allowed = two.acquire_entry(key, 4, 5) if consume else True
        assert one.spend(key, 4, 5, consume) == (allowed, *two.get_moving_window(key, 4, 5))
