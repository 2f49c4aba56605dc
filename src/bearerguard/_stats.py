"""The counters the validator keeps anyway, as one read-only record per issuer.

Observability (metrics, logs), the OpenAPI helper and ``inspect`` read these
instead of reaching into the validator's JWKS caches, resolvers and
introspectors, so dependencies point down: the request path never knows who
reads its counters.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["IssuerStats"]


@dataclass(frozen=True, slots=True)
class IssuerStats:
    """One issuer's counters at collection time (summed over middlewares that trust it)."""

    issuer: str
    #: Seconds since the keys in hand were fetched (``None``: none yet).
    jwks_age: float | None
    jwks_keys: int
    jwks_fetches: int
    jwks_failures: int
    #: How many times a fetch changed the key set (the first fetch counts once).
    jwks_changes: int
    metadata_fetches: int
    metadata_failures: int
    introspection_calls: int
    introspection_failures: int
