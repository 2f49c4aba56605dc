"""Who is asking: the client's address, believing forwarding headers only from trusted proxies.

A ``Forwarded`` or ``X-Forwarded-For`` header is whatever the sender wrote, so it is
read only when the TCP peer is one of ``trusted_proxies``; then the right-most
address that is *not* a trusted proxy is the client (each proxy appends the peer it
saw, so everything left of the last untrusted hop may be forged). A client talking to
us directly can neither hide behind a header nor put a victim's address in one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from starlette.types import Scope

__all__ = ["IPAddress", "IPNetwork", "TrustedProxies", "parse_address"]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

#: More hops than this in one header is not a proxy chain; the walk stops there.
_MAX_HOPS = 32


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    """The proxies whose forwarding headers are believed (addresses or CIDR networks).

    Empty (the default) means no header is ever believed: the client is the TCP peer.
    """

    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str | IPNetwork | IPAddress]) -> TrustedProxies:
        """``["10.0.0.0/8", "127.0.0.1", "::1"]``; a malformed entry is a startup error."""
        if isinstance(entries, str):
            raise TypeError('trusted_proxies takes a list of addresses, e.g. ["10.0.0.0/8"]')
        networks: list[IPNetwork] = []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError as exc:
                why = f"trusted_proxies: {entry!r} is not an address or network"
                raise ValueError(why) from exc
        return cls(tuple(networks))

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: IPAddress | None) -> bool:
        """Whether a forwarding header from this peer is believed."""
        if address is None:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def peer(self, scope: Scope) -> IPAddress | None:
        """The TCP peer (ASGI ``client``), or ``None`` when the server gave none (e.g. a socket)."""
        client = scope.get("client")
        if not client:
            return None
        return parse_address(str(client[0]))

    def peer_is_trusted(self, scope: Scope) -> bool:
        """Whether headers a proxy sets (forwarding, client certificates) may be believed."""
        return bool(self.networks) and self.trusts(self.peer(scope))

    def client_address(self, scope: Scope) -> IPAddress | None:
        """The client's address: the peer, or the right-most untrusted forwarded address.

        ``None`` when it cannot be known (no peer, or a trusted proxy forwarded an
        ``unknown`` or obfuscated client); callers decide what an unknown client means.
        """
        peer = self.peer(scope)
        if not self.networks or not self.trusts(peer):
            return peer
        chain = _forwarded_chain(scope["headers"])
        if chain is None:
            return peer  # a trusted proxy that forwarded nothing: it is the client
        walked = chain[-_MAX_HOPS:]
        for hop in reversed(walked):
            if hop is None:
                return None
            if not self.trusts(hop):
                return hop
        # Every hop walked is a trusted proxy: the left-most of them is as far as
        # anyone can see (never a hop beyond the walk, which nobody vouched for).
        return walked[0] if walked else peer


def parse_address(text: str) -> IPAddress | None:
    """An address as proxies write it: bare, ``[v6]``, ``[v6]:port``, ``v4:port``, quoted."""
    text = text.strip().strip('"')
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        text = text.partition(":")[0]  # IPv4 with a port (an IPv6 address has several colons)
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _forwarded_chain(headers: Sequence[tuple[bytes, bytes]]) -> list[IPAddress | None] | None:
    """The hops of ``X-Forwarded-For`` if present, else of ``Forwarded`` (RFC 7239), in order.

    ``X-Forwarded-For`` first: it is what nginx, HAProxy, Envoy, Traefik, Caddy, cloud
    load balancers and uvicorn's own proxy mode append to, and they pass a client's
    ``Forwarded`` through untouched. Preferring ``Forwarded`` let any client behind
    such a proxy choose its own address (``for=unknown`` to go uncounted, a victim's
    address to be counted as them). A proxy that writes ``Forwarded`` must drop the
    client's ``X-Forwarded-For``.

    Repeated header lines are joined in order, as HTTP says. ``None``: no such header.
    An entry that is not an address (``unknown``, an obfuscated ``_name``) is ``None``.
    """
    forwarded: list[bytes] = []
    x_forwarded_for: list[bytes] = []
    for name, value in headers:
        if name == b"forwarded":
            forwarded.append(value)
        elif name == b"x-forwarded-for":
            x_forwarded_for.append(value)
    if x_forwarded_for:
        parts = b",".join(x_forwarded_for).decode("latin-1").split(",")
        return [parse_address(part) for part in parts if part.strip()]
    if forwarded:
        hops: list[IPAddress | None] = []
        for element in b",".join(forwarded).decode("latin-1").split(","):
            found: IPAddress | None = None
            for pair in element.split(";"):
                key, _, given = pair.strip().partition("=")
                if key.strip().lower() == "for":
                    found = parse_address(given)
                    break
            hops.append(found)
        return hops
    return None
