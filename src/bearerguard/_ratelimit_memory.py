"""The in-memory moving window at O(1) a hit, with ``limits``' own answers.

``limits.storage.MemoryStorage`` keeps a moving window as a list of ``Entry``
objects, newest first, and inserts every hit at the front: the cost of a hit grows
with the hits in the window, each hit adds one object for the
garbage collector, and a timer thread is started every 10 ms to prune. Here a key's
window is a deque of hit times, oldest first: a hit appends, times that left the
window leave from the left, and keys idle past their window are dropped a few at a
time as other keys are hit. Acquiring and reading a window answer exactly as
``limits`` does (same boundaries, same counts); fixed-window and
sliding-window-counter data stay in ``limits``' own structures.

Like the limiter that uses it, it is meant for one event loop's thread.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque

from limits.storage import MemoryStorage

__all__ = ["MovingWindowMemory"]

#: Idle keys examined for removal per accepted hit: enough to keep up with any churn.
_SWEEP_PER_HIT = 2


class MovingWindowMemory(MemoryStorage):
    """``memory://`` for the limiter: ``limits``' MemoryStorage with a deque per moving window."""

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions)
        #: key -> (hit times, oldest first; the window's length in seconds), least recent first.
        self._windows: OrderedDict[str, tuple[deque[float], int]] = OrderedDict()

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        """One hit (``amount`` of them) unless the last ``expiry`` seconds already hold ``limit``.

        ``limits`` refuses when its ``limit - amount + 1``-th newest entry is no older
        than ``now - expiry``: after dropping the older times that is ``len + amount >
        limit``.
        """
        return self._acquire(key, limit, expiry, amount, time.time())

    def _acquire(self, key: str, limit: int, expiry: int, amount: int, now: float) -> bool:
        if amount > limit:
            return False
        window = self._windows.get(key)
        if window is None:
            times: deque[float] = deque()
            self._windows[key] = (times, expiry)
        else:
            times = window[0]
            self._windows.move_to_end(key)
            horizon = now - expiry
            while times and times[0] < horizon:
                times.popleft()
        if len(times) + amount > limit:
            return False
        if amount == 1:
            times.append(now)
        else:
            times.extend([now] * amount)
        self._sweep(now)
        return True

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        """(Oldest hit in the window, hits in it): those strictly newer than ``now - expiry``."""
        return self._window(key, expiry, time.time())

    def _window(self, key: str, expiry: int, now: float) -> tuple[float, int]:
        window = self._windows.get(key)
        if window is None or not window[0]:
            return now, 0
        times = window[0]
        horizon = now - expiry
        while times and times[0] < horizon:
            times.popleft()
        at_edge = 0
        while at_edge < len(times) and times[at_edge] == horizon:
            at_edge += 1
        count = len(times) - at_edge
        if count:
            return times[at_edge], count
        return (times[0] if times else now), 0

    def spend(self, key: str, limit: int, expiry: int, consume: bool) -> tuple[bool, float, int]:
        """One hit (when ``consume``), then the window: what the limiter asks for each limit.

        The answers of :meth:`acquire_entry` then :meth:`get_moving_window`, in one call
        at one clock reading (``limits`` wraps each of those two in an error translator;
        nothing here raises, so there is nothing to translate).
        """
        now = time.time()
        allowed = self._acquire(key, limit, expiry, 1, now) if consume else True
        start, count = self._window(key, expiry, now)
        return allowed, start, count

    def _sweep(self, now: float) -> None:
        """Drop keys whose newest hit has left their window (the least recently hit first)."""
        windows = self._windows
        for _ in range(_SWEEP_PER_HIT):
            if not windows:
                return
            key, (times, expiry) = next(iter(windows.items()))
            if times and times[-1] >= now - expiry:
                return
            del windows[key]

    def clear(self, key: str) -> None:
        super().clear(key)
        self._windows.pop(key, None)

    def reset(self) -> int | None:
        windows = len(self._windows)
        self._windows.clear()
        return max(windows, super().reset() or 0)
