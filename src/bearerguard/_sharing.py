"""Stolen-token detection: a valid token used from more networks at once than one holder could be.

Validity says nothing about who holds a token. A token replayed by a thief keeps
working until it expires, but it shows up from networks its owner is not on. For
each validated token the watch remembers the client networks (IPv4 /24, IPv6 /48 by
default, so a phone moving between one carrier's towers stays one network) seen in
the last ``window`` seconds; more than ``max_networks`` of them is sharing. It is
logged once per token (a short hash, never addresses: they are personal data), and
with ``action="refuse"`` the token is refused everywhere until it has gone unused
for a whole window.

State lives where the rate limits live: in process for ``memory://``, in Redis for
replicas (one script call, one round trip per request), keyed by the API's identity
so two APIs sharing a Redis keep separate books.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from starlette.types import Scope

from bearerguard._errors import InvalidToken, Unavailable
from bearerguard._proxies import IPAddress, TrustedProxies, parse_address
from bearerguard._redis import Script, ScriptBatch, redis_client
from bearerguard._tokens import AccessToken

__all__ = ["TokenSharing", "TokenSharingWatch"]

log = logging.getLogger("bearerguard.token")

#: Client addresses whose network is remembered; a bounded memo, as networks repeat.
_NETWORK_MEMO_SIZE = 4096

# KEYS[1]: the token's networks (sorted set, score = last seen in ms); KEYS[2]: its flag.
# ARGV: now (ms), window (ms), network, max_networks. Returns {networks, flagged, newly}.
_SCRIPT = Script("""
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local most = tonumber(ARGV[4])
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(most + 2))
redis.call('PEXPIRE', KEYS[1], window)
local n = redis.call('ZCARD', KEYS[1])
local newly = 0
if n > most then
  if redis.call('SET', KEYS[2], '1', 'NX', 'PX', window) then newly = 1 end
end
local flagged = redis.call('PEXPIRE', KEYS[2], window)
return {n, flagged, newly}
""")


@dataclass(frozen=True, slots=True)
class TokenSharing:
    """How many networks one token may be used from at once before it counts as stolen.

    ``action="log"`` lets requests through and reports the token once
    (``bearerguard.token.shared``); ``"refuse"`` also answers 401 ``invalid_token``
    for that token until it has gone unused for ``window`` seconds. ``max_tokens``
    bounds the in-process memory (least recently seen tokens are forgotten first).
    """

    max_networks: int = 3
    window: float = 300.0
    action: Literal["log", "refuse"] = "log"
    prefix_v4: int = 24
    prefix_v6: int = 48
    max_tokens: int = 100_000

    def __post_init__(self) -> None:
        if self.max_networks < 1:
            raise ValueError("TokenSharing.max_networks must be at least 1")
        if not (self.window > 0 and math.isfinite(self.window)):
            raise ValueError("TokenSharing.window must be a positive number of seconds")
        if self.action not in ("log", "refuse"):
            raise ValueError("TokenSharing.action must be 'log' or 'refuse'")
        if not 0 <= self.prefix_v4 <= 32 or not 0 <= self.prefix_v6 <= 128:
            raise ValueError("TokenSharing prefixes: prefix_v4 in 0..32, prefix_v6 in 0..128")
        if self.max_tokens < 1:
            raise ValueError("TokenSharing.max_tokens must be at least 1")


@dataclass(slots=True)
class _Seen:
    networks: dict[str, float]
    flagged_until: float = 0.0


class TokenSharingWatch:
    """Applies a :class:`TokenSharing` policy to validated tokens, in memory or in Redis."""

    def __init__(
        self,
        policy: TokenSharing,
        *,
        storage: str = "memory://",
        fail_closed: bool = False,
        namespace: str = "bearerguard",
        proxies: TrustedProxies | None = None,
        clock: Callable[[], float] = time.time,
        timeout: float = 1.0,
        outage_cooldown: float = 1.0,
        batch: ScriptBatch | None = None,
    ) -> None:
        """``batch``: the rate limiter's pipeline on the same Redis, so a request's hit and
        sighting travel together (one round trip); else the watch opens its own client.
        """
        self.policy = policy
        self.fail_closed = fail_closed
        self.proxies = proxies or TrustedProxies()
        self.clock = clock
        self.timeout = timeout
        self.outage_cooldown = outage_cooldown
        self._prefix = f"bearerguard:sharing:{_digest(namespace)}:"
        self._networks: dict[str, str] = {}
        self._memory: OrderedDict[tuple[str, str], _Seen] | None = None
        self._redis: Any = None  # the client the watch owns (and closes), if any
        self._cluster_script: Any = None
        self._batch: ScriptBatch | None = None
        self._down_until = 0.0
        #: Requests decided without the storage (it failed, or was in its outage cooldown).
        self.storage_errors = 0
        #: Tokens reported as shared since start.
        self.flagged = 0
        scheme = storage.partition("://")[0].lower().removeprefix("async+")
        if scheme == "memory":
            self._memory = OrderedDict()
        elif batch is not None:
            self._batch = batch
        elif scheme == "redis+cluster":
            # A cluster pipeline would span nodes: one script call per sighting there.
            self._redis = _redis_client(storage, timeout)
            self._cluster_script = self._redis.register_script(_SCRIPT.text)
        elif scheme in ("redis", "rediss", "unix", "redis+sentinel"):
            self._redis = _redis_client(storage, timeout)
            self._batch = ScriptBatch(self._redis)
        else:
            raise ValueError(
                f"token_sharing cannot keep its state in {scheme}://; use memory:// or redis://"
            )

    async def aclose(self) -> None:
        if self._batch is not None and self._redis is not None:
            await self._batch.aclose()
        if self._redis is not None:
            try:
                await self._redis.aclose()
            except Exception:  # closing a dead connection must not fail shutdown
                log.debug("bearerguard.token.sharing_close_failed", exc_info=True)

    def network_of(self, address: IPAddress) -> str:
        """The network an address counts as (``/24`` and ``/48`` by default)."""
        prefix = self.policy.prefix_v4 if address.version == 4 else self.policy.prefix_v6
        return str(ipaddress.ip_network((address, prefix), strict=False))

    def _network_for(self, scope: Scope) -> str | None:
        """The client's network; without trusted proxies memoised by the peer's host string."""
        if self.proxies:
            address = self.proxies.client_address(scope)
            return None if address is None else self.network_of(address)
        client = scope.get("client")
        if not client:
            return None
        host = client[0]
        network = self._networks.get(host)
        if network is None:
            address = parse_address(str(host))
            if address is None:
                return None
            network = self.network_of(address)
            if len(self._networks) >= _NETWORK_MEMO_SIZE:
                self._networks.clear()
            self._networks[host] = network
        return network

    async def observe(self, token: AccessToken, scope: Scope) -> None:
        """Record where ``token`` is used from; raise when it is refused as shared.

        A client whose address cannot be known (no peer, or a trusted proxy that
        forwarded ``unknown``) is not counted: nothing can be said about it.
        """
        network = self._network_for(scope)
        if network is None:
            return
        now = self.clock()
        if self._memory is not None:
            count, flagged, newly = self._observe_in_memory(_memory_key(token), network, now)
        else:
            key = _token_key(token)
            # The outage cooldown runs on the monotonic clock it was set with, not on
            # ``clock`` (wall time): compared with wall time it never held anyone back.
            if time.monotonic() < self._down_until:
                self._without_storage(token, None)
                return
            try:
                count, flagged, newly = await self._observe_in_redis(key, network, now)
            except Exception as exc:  # any Redis trouble is an outage, never a 500
                self._without_storage(token, exc)
                return
            if self._down_until:
                self._down_until = 0.0
                log.info("bearerguard.token.sharing_storage_recovered")
        if newly:
            self.flagged += 1
            log.warning(
                "bearerguard.token.shared token=%s networks=%d window=%.0fs action=%s",
                token.short_hash,
                count,
                self.policy.window,
                self.policy.action,
            )
        if flagged and self.policy.action == "refuse":
            raise InvalidToken(
                "The access token is being used from too many networks", reason="token_shared"
            )

    def _observe_in_memory(
        self, key: tuple[str, str], network: str, now: float
    ) -> tuple[int, bool, bool]:
        book = self._memory
        assert book is not None
        policy = self.policy
        seen = book.get(key)
        if seen is None:
            seen = book[key] = _Seen({})
            if len(book) > policy.max_tokens:
                book.popitem(last=False)
        else:
            book.move_to_end(key)
        horizon = now - policy.window
        networks = seen.networks
        networks.pop(network, None)  # re-inserted last: the dict stays oldest-first
        networks[network] = now
        while networks:
            oldest, last = next(iter(networks.items()))
            if last > horizon and len(networks) <= policy.max_networks + 1:
                break
            del networks[oldest]
        count = len(networks)
        newly = False
        if seen.flagged_until <= now:
            seen.flagged_until = 0.0
        if count > policy.max_networks and not seen.flagged_until:
            newly = True
        if newly or seen.flagged_until:
            seen.flagged_until = now + policy.window
        return count, bool(seen.flagged_until), newly

    async def _observe_in_redis(self, key: str, network: str, now: float) -> tuple[int, bool, bool]:
        base = self._prefix + "{" + key + "}"  # one hash slot for both keys (Redis Cluster)
        args = [int(now * 1000), int(self.policy.window * 1000), network, self.policy.max_networks]
        keys = [base + ":n", base + ":f"]
        async with asyncio.timeout(self.timeout):
            if self._batch is not None:
                count, flagged, newly = await self._batch.run(_SCRIPT, keys, args)
            else:
                count, flagged, newly = await self._cluster_script(keys=keys, args=args)
        return int(count), bool(int(flagged)), bool(int(newly))

    def _without_storage(self, token: AccessToken, exc: Exception | None) -> None:
        """Storage unreachable: warn once per cooldown, count, then fail open or closed."""
        self.storage_errors += 1
        if exc is not None:
            now = time.monotonic()
            if now >= self._down_until:
                log.warning(
                    "bearerguard.token.sharing_storage_unavailable token=%s error=%s"
                    " fail_closed=%s errors=%d",
                    token.short_hash,
                    type(exc).__name__,
                    self.fail_closed,
                    self.storage_errors,
                )
            self._down_until = now + self.outage_cooldown
        if self.fail_closed:
            raise Unavailable(
                "The token sharing check is unavailable",
                retry_after=max(1, math.ceil(self.outage_cooldown)),
                reason="sharing_unavailable",
            )


def _memory_key(token: AccessToken) -> tuple[str, str]:
    """The in-process key: ``(iss, jti)`` or the token hash, no hashing on the request path."""
    jti = token.claims.get("jti")
    if type(jti) is str and jti:
        return token.issuer, jti
    return "", token.token_hash


def _token_key(token: AccessToken) -> str:
    """By ``iss`` + ``jti`` when the token has one (a re-spelled signature is the same token)."""
    jti = token.claims.get("jti")
    if type(jti) is str and jti:
        return _digest(token.issuer, jti)
    return token.token_hash[:32]


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def _redis_client(uri: str, timeout: float) -> Any:
    """A redis-py asyncio client for any URI rate limits take (one server, cluster, sentinel)."""
    return redis_client(uri, socket_timeout=timeout, socket_connect_timeout=timeout)
