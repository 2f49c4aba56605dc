"""Who is asking: headers believed only from trusted proxies; the right-most untrusted hop wins."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from bearerguard import BearerAuthMiddleware
from bearerguard._proxies import TrustedProxies, parse_address


def scope(peer: str | None, *headers: tuple[str, str]) -> dict[str, Any]:
    return {
        "type": "http",
        "client": (peer, 50000) if peer is not None else None,
        "headers": [(k.lower().encode(), v.encode("latin-1")) for k, v in headers],
    }


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


PROXIES = TrustedProxies.parse(["10.0.0.0/8", "fd00::/8"])


def test_without_trusted_proxies_the_peer_is_the_client_whatever_the_headers_say() -> None:
    s = scope("203.0.113.7", ("X-Forwarded-For", "198.51.100.1"), ("Forwarded", "for=198.51.100.2"))
    assert TrustedProxies().client_address(s) == ip("203.0.113.7")


def test_headers_from_an_untrusted_peer_are_ignored() -> None:
    s = scope("203.0.113.7", ("X-Forwarded-For", "198.51.100.1"))
    assert PROXIES.client_address(s) == ip("203.0.113.7")


def test_the_right_most_untrusted_forwarded_address_is_the_client() -> None:
    # The client forged "1.2.3.4" in front; the trusted proxy appended the peer it saw.
    s = scope("10.0.0.5", ("X-Forwarded-For", "1.2.3.4, 198.51.100.9, 10.0.0.9"))
    assert PROXIES.client_address(s) == ip("198.51.100.9")


def test_repeated_forwarding_header_lines_are_joined_in_order() -> None:
    s = scope("10.0.0.5", ("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-For", "198.51.100.9"))
    assert PROXIES.client_address(s) == ip("198.51.100.9")


def test_rfc7239_forwarded_is_parsed_with_quotes_ports_and_brackets() -> None:
    s = scope(
        "10.0.0.5",
        ("Forwarded", 'for=192.0.2.60;proto=http, for="[2001:db8:cafe::17]:4711"'),
    )
    assert PROXIES.client_address(s) == ip("2001:db8:cafe::17")


@pytest.mark.parametrize("forged", ["for=unknown", "for=192.0.2.60", 'for="_hidden"'])
def test_a_client_forwarded_header_never_overrides_the_x_forwarded_for_the_proxy_appended(
    forged: str,
) -> None:
    # nginx, ALB, Envoy, Traefik append to X-Forwarded-For and pass Forwarded through.
    s = scope("10.0.0.5", ("Forwarded", forged), ("X-Forwarded-For", "198.51.100.9"))
    assert PROXIES.client_address(s) == ip("198.51.100.9")


def test_a_chain_longer_than_the_walk_never_yields_a_hop_beyond_it() -> None:
    hops = ", ".join(["192.0.2.1"] + ["10.0.0.9"] * 40)
    s = scope("10.0.0.5", ("X-Forwarded-For", hops))
    assert PROXIES.client_address(s) == ip("10.0.0.9")


def test_an_unknown_forwarded_client_is_none_not_the_proxy() -> None:
    s = scope("10.0.0.5", ("Forwarded", "for=unknown"))
    assert PROXIES.client_address(s) is None
    s = scope("10.0.0.5", ("X-Forwarded-For", "_hidden"))
    assert PROXIES.client_address(s) is None


def test_a_trusted_proxy_that_forwards_nothing_is_itself_the_client() -> None:
    assert PROXIES.client_address(scope("10.0.0.5")) == ip("10.0.0.5")


def test_a_chain_of_trusted_proxies_yields_the_left_most_hop() -> None:
    s = scope("10.0.0.5", ("X-Forwarded-For", "10.1.1.1, 10.2.2.2"))
    assert PROXIES.client_address(s) == ip("10.1.1.1")


def test_ipv4_mapped_ipv6_peers_are_matched_as_ipv4() -> None:
    s = scope("::ffff:10.0.0.5", ("X-Forwarded-For", "198.51.100.9"))
    assert PROXIES.client_address(s) == ip("198.51.100.9")


def test_no_peer_is_an_unknown_client() -> None:
    assert PROXIES.client_address(scope(None)) is None
    assert not PROXIES.peer_is_trusted(scope(None))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("198.51.100.1", "198.51.100.1"),
        ("198.51.100.1:443", "198.51.100.1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ('"[2001:db8::1]"', "2001:db8::1"),
        ("unknown", None),
        ("[2001:db8::1", None),
        ("", None),
    ],
)
def test_addresses_are_parsed_as_proxies_write_them(text: str, expected: str | None) -> None:
    assert parse_address(text) == (ip(expected) if expected else None)


def test_a_malformed_trusted_proxy_is_a_startup_error() -> None:
    with pytest.raises(ValueError, match="not an address"):
        BearerAuthMiddleware(
            lambda s, r, se: None,  # type: ignore[arg-type,return-value]
            issuer="https://idp.example.com",
            audience="api",
            trusted_proxies=["10.0.0.0/33"],
        )
    with pytest.raises(TypeError):
        TrustedProxies.parse("10.0.0.0/8")  # a bare string would be split into characters
