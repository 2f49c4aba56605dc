"""Rate-limit decisions and the headers they become (RateLimit-*, draft RateLimit-Policy).

A decision is plain data: the limiter makes one per check, the middleware and the
per-route helpers merge them on the scope, and the response carries the headers
of the tightest. Nothing here talks to a storage.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from starlette.types import Scope

__all__ = [
    "DECISION_SCOPE_KEY",
    "LIMITER_SCOPE_KEY",
    "PolicyState",
    "RateLimitDecision",
    "decision_of",
    "record_decision",
]

#: Where each limiter check leaves its decision (merged, most restrictive wins) for the headers.
DECISION_SCOPE_KEY = "bearerguard.ratelimit"
#: Where the middleware puts its :class:`RateLimiter` so per-route limits share its storage
#: (here, not beside the limiter, so the middleware names it without importing ``limits``).
LIMITER_SCOPE_KEY = "bearerguard.limiter"


@dataclass(frozen=True, slots=True)
class PolicyState:
    """One limit (``q`` per ``w`` seconds) and where this key stands in it."""

    name: str
    quota: int
    window: int
    remaining: int
    reset: int


@dataclass(frozen=True, slots=True)
class RateLimitDecision:
    """The outcome of one allowed hit; ``reset`` is the seconds until the window frees capacity.

    ``limit``/``remaining``/``reset`` describe the most restrictive limit (the one a
    client should pace itself on); ``policies`` keeps every limit for the newer
    draft header pair. A decision without policies (no limit for this token, or the
    storage was down and the limiter failed open: ``degraded``) sends no headers,
    because any numbers would be invented.
    """

    limit: int
    remaining: int
    reset: int
    policies: tuple[PolicyState, ...] = ()
    degraded: bool = False

    def headers(self) -> list[tuple[bytes, bytes]]:
        """RateLimit-Limit/-Remaining/-Reset, plus RateLimit-Policy and RateLimit (draft -10)."""
        if not self.policies:
            return []
        return [
            (b"ratelimit-limit", b"%d" % self.limit),
            (b"ratelimit-remaining", b"%d" % self.remaining),
            (b"ratelimit-reset", b"%d" % self.reset),
            *_draft_headers(self.policies),
        ]

    def merge(self, other: RateLimitDecision) -> RateLimitDecision:
        """Combine two decisions on one request (global and per-route): the tighter one leads."""
        degraded = self.degraded or other.degraded
        if not (self.policies and other.policies):
            lead = self if self.policies else other
            return RateLimitDecision(
                lead.limit, lead.remaining, lead.reset, lead.policies, degraded
            )
        lead = min((self, other), key=lambda d: (d.remaining, -d.reset))
        return RateLimitDecision(
            lead.limit,
            lead.remaining,
            lead.reset,
            _unique(self.policies + other.policies),
            degraded,
        )


def _draft_headers(policies: tuple[PolicyState, ...]) -> list[tuple[bytes, bytes]]:
    """Every limited response carries these: formatted as bytes, the constant part once."""
    declared = b", ".join([_declared(p.name, p.quota, p.window) for p in policies])
    current = b", ".join(
        [b'"%s";r=%d;t=%d' % (p.name.encode(), p.remaining, p.reset) for p in policies]
    )
    return [(b"ratelimit-policy", declared), (b"ratelimit", current)]


@functools.lru_cache(maxsize=256)
def _declared(name: str, quota: int, window: int) -> bytes:
    """One policy of RateLimit-Policy: it depends on the limit alone, not on the hit."""
    return f'"{name}";q={quota};w={window}'.encode()


def _unique(policies: tuple[PolicyState, ...]) -> tuple[PolicyState, ...]:
    """Keep policy names unique in one header (a route limit may repeat a global one's shape)."""
    seen: dict[str, int] = {}
    out: list[PolicyState] = []
    for p in policies:
        n = seen.get(p.name, 0)
        seen[p.name] = n + 1
        out.append(
            p
            if n == 0
            else PolicyState(f"{p.name}-{n + 1}", p.quota, p.window, p.remaining, p.reset)
        )
    return tuple(out)


def decision_of(states: list[PolicyState]) -> RateLimitDecision:
    """The decision a walk over several limits ends in: the tightest leads."""
    lead = states[0] if len(states) == 1 else min(states, key=lambda s: (s.remaining, -s.reset))
    return RateLimitDecision(lead.quota, lead.remaining, lead.reset, tuple(states))


def record_decision(scope: Scope, decision: RateLimitDecision) -> None:
    """Leave a decision on the scope, merged with any earlier one, for the response headers."""
    previous = scope.get(DECISION_SCOPE_KEY)
    scope[DECISION_SCOPE_KEY] = (
        previous.merge(decision) if isinstance(previous, RateLimitDecision) else decision
    )
