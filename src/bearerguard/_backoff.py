"""The retry policy for upstream fetches: how long a failed metadata or JWKS fetch waits.

Kept apart from :mod:`bearerguard._fetch` (which makes one exchange and says
whether it may be retried) so the policy of *when* to try again is one small
object the metadata resolver and the JWKS cache each hold.
"""

from __future__ import annotations

__all__ = ["Backoff"]


class Backoff:
    """Spacing between failed attempts, 1 s doubling up to a cap, so a down IdP is not hammered.

    A ``Retry-After`` from the upstream lengthens the wait (never beyond the cap).
    """

    __slots__ = ("_cap", "_first", "failures", "next_attempt")

    def __init__(self, cap: float, *, first: float = 1.0) -> None:
        self._cap = max(0.0, cap)
        self._first = first
        self.failures = 0
        self.next_attempt = float("-inf")

    def allows(self, now: float) -> bool:
        # The second test lets a clock that went back not stretch the wait beyond the cap.
        return now >= self.next_attempt or self.next_attempt - now > self._cap

    def remaining(self, now: float) -> float:
        return max(0.0, self.next_attempt - now)

    def failed(self, now: float, *, hint: float | None = None) -> float:
        """Record a failure at ``now``; return the seconds until the next attempt."""
        self.failures += 1
        delay = min(self._cap, self._first * 2.0 ** min(self.failures - 1, 62))
        if hint is not None:
            delay = max(delay, min(self._cap, hint))
        self.next_attempt = now + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.next_attempt = float("-inf")
