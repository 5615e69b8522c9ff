"""Where a webhook may go: the SSRF check of a Webhook step's URL.

A workflow's author writes the URL, so without a check a Webhook step would let anyone with a
project reach what the worker can reach: the cloud metadata service at 169.254.169.254, the
database, Redis, an admin page on 10.0.0.1. The rules:

- http or https, a host, no user name or password, ports 80 and 443 only;
- the host is resolved once, here, and every address it resolves to must be global: one private
  answer among public ones refuses the URL (a name that answers both is a rebinding attempt);
- the request then goes to the address that was checked (`Target.address`), never to the name,
  so a second DNS answer cannot change where it lands (workflows/webhooks.py);
- hosts named in `settings.WEBHOOK_ALLOWED_HOSTS` (`host` or `host:port`) are exempt from the
  address and port rules: an operator's own receiver on the internal network, the tests' on
  127.0.0.1. They are still resolved once and pinned.

`is_global_address` decides from explicit tables (IANA's special-purpose registries) rather than
`ipaddress.is_global`, whose answers changed between Python patch releases.
"""

import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from django.conf import settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOWED_PORTS = (80, 443)
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_URL_LENGTH = 2000


class UnsafeUrl(ValueError):
    """A URL a webhook must not be sent to; the message names the field: `url: …`."""


class UnresolvableHost(UnsafeUrl):
    """The host has no address (now): unlike the other refusals, worth trying again later."""


def _networks(*cidrs: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(cidr) for cidr in cidrs]


# IPv4 blocks that are not reachable on the public internet, with what to call them in a message.
# Source: the IANA IPv4 Special-Purpose Address Registry (RFC 6890 and its updates).
_IPV4_REFUSED = [
    (_networks("0.0.0.0/8"), "an unspecified (this-network) address"),
    (_networks("127.0.0.0/8"), "a loopback address"),
    (_networks("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"), "a private address"),
    (_networks("169.254.0.0/16"), "a link-local address (cloud metadata lives there)"),
    (_networks("100.64.0.0/10"), "a shared (carrier-grade NAT) address"),
    (_networks("192.0.0.0/24"), "an IETF protocol address"),
    (_networks("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"), "a documentation address"),
    (_networks("198.18.0.0/15"), "a benchmarking address"),
    (_networks("192.88.99.0/24"), "a 6to4 relay address"),
    (_networks("224.0.0.0/4"), "a multicast address"),
    (_networks("255.255.255.255/32"), "the broadcast address"),
    (_networks("240.0.0.0/4"), "a reserved address"),
]

# IPv6: only global unicast (2000::/3) can be public; inside it, these blocks are not. Addresses
# embedding an IPv4 one (IPv4-mapped, NAT64, 6to4) are judged by the IPv4 address they reach.
_IPV6_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
_IPV6_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_IPV6_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV6_6TO4 = ipaddress.ip_network("2002::/16")
_IPV6_TEREDO = ipaddress.ip_network("2001::/32")
_IPV6_REFUSED_INSIDE_GLOBAL = [
    (_networks("2001:db8::/32", "3fff::/20"), "a documentation address"),
    (_networks("2001:2::/48"), "a benchmarking address"),
    # Teredo, ORCHID and the other IETF protocol assignments.
    (_networks("2001::/23"), "an IETF protocol address"),
]
# Outside 2000::/3, named for the message only: all of it is refused.
_IPV6_REFUSED_OUTSIDE_GLOBAL = [
    (_networks("::/128"), "the unspecified address"),
    (_networks("::1/128"), "a loopback address"),
    (_networks("::/96"), "an IPv4-compatible address"),
    (_networks("64:ff9b:1::/48"), "a local NAT64 address"),
    (_networks("100::/64"), "a discard-only address"),
    (_networks("fc00::/7"), "a private (unique local) address"),
    (_networks("fe80::/10"), "a link-local address"),
    (_networks("fec0::/10"), "a site-local address"),
    (_networks("ff00::/8"), "a multicast address"),
]


def refusal(address: Address | str) -> str | None:
    """Why a webhook may not go to `address` ("a private address"), or None if it is global."""
    if isinstance(address, str):
        address = ipaddress.ip_address(address)
    if isinstance(address, ipaddress.IPv6Address):
        return _ipv6_refusal(address)
    for networks, reason in _IPV4_REFUSED:
        if any(address in network for network in networks):
            return reason
    return None


def _ipv6_refusal(address: ipaddress.IPv6Address) -> str | None:
    # A zone id (fe80::1%eth0) takes no part in which block the address is in.
    address = ipaddress.IPv6Address(int(address))
    if address in _IPV6_MAPPED:
        return _embedded(address.ipv4_mapped, "IPv4-mapped")
    if address in _IPV6_NAT64:
        return _embedded(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), "NAT64")
    if address in _IPV6_6TO4:
        return _embedded(address.sixtofour, "6to4")
    if address in _IPV6_TEREDO:
        return "a Teredo address"
    if address not in _IPV6_GLOBAL_UNICAST:
        for networks, reason in _IPV6_REFUSED_OUTSIDE_GLOBAL:
            if any(address in network for network in networks):
                return reason
        return "a reserved address"
    for networks, reason in _IPV6_REFUSED_INSIDE_GLOBAL:
        if any(address in network for network in networks):
            return reason
    return None


def _embedded(ipv4: ipaddress.IPv4Address, form: str) -> str | None:
    reason = refusal(ipv4)
    return f"{reason} in {form} form ({ipv4})" if reason else None


def is_global_address(address: Address) -> bool:
    """Whether a webhook may be sent to this address: only ones reachable on the public internet."""
    return refusal(address) is None


@dataclass(frozen=True)
class Target:
    """Where to send a request: `address` was checked; `host` goes in the Host header and TLS."""

    scheme: str
    host: str  # ASCII (IDNA) and lower case; an IPv6 literal without brackets
    port: int
    address: str
    path: str  # with the query, percent-encoded, never empty

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")
# What may stay unescaped in a path and a query (RFC 3986 pchar plus "/" and "?"); "%" keeps
# an author's own escapes as they are.
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"


def resolve_target(url: str, *, resolver=socket.getaddrinfo) -> Target:
    """The checked destination of a webhook URL, resolved once; UnsafeUrl if it may not be sent to."""
    if not isinstance(url, str) or not url:
        raise UnsafeUrl("url: is required")
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl(f"url: is longer than {MAX_URL_LENGTH:,} characters")
    if _CONTROL_OR_SPACE.search(url):
        raise UnsafeUrl("url: contains spaces or control characters")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UnsafeUrl("url: must start with http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("url: must not contain a user name or password (put credentials in a header)")
    if not parts.hostname:
        raise UnsafeUrl("url: has no host")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise UnsafeUrl("url: the port is not a number from 1 to 65535") from None
    host = _ascii_host(parts.hostname)
    allowed = _is_allowed_host(host, port)
    if not allowed and port not in ALLOWED_PORTS:
        raise UnsafeUrl(f"url: port {port} is not allowed (only 80 and 443)")

    literal = _ip_literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        addresses = _resolve(host, port, resolver)
    if not allowed:
        for address in addresses:
            reason = refusal(address)
            if reason:
                if literal is not None:
                    raise UnsafeUrl(f"url: {host} is {reason}")
                raise UnsafeUrl(f"url: {host} resolves to {address}, {reason}")

    path = quote(parts.path, safe=_PATH_SAFE) or "/"
    if parts.query:
        path += "?" + quote(parts.query, safe=_QUERY_SAFE)
    return Target(scheme=scheme, host=host, port=port, address=str(addresses[0]), path=path)


def _ascii_host(hostname: str) -> str:
    if ":" in hostname:  # an IPv6 literal; urlsplit removed the brackets
        return hostname
    try:
        return hostname.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise UnsafeUrl(f"url: {hostname!r} is not a valid host name") from None


def _ip_literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _resolve(host: str, port: int, resolver) -> list[Address]:
    try:
        answers = resolver(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        answers = []
    addresses = []
    for _family, _type, _proto, _canonname, sockaddr in answers:
        # IPv6 sockaddrs may carry a zone (fe80::1%eth0) that ip_address reads since Python 3.9.
        address = ipaddress.ip_address(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise UnresolvableHost(f"url: {host} cannot be resolved")
    return addresses


def _is_allowed_host(host: str, port: int) -> bool:
    allowed = {entry.strip().lower() for entry in settings.WEBHOOK_ALLOWED_HOSTS if entry.strip()}
    if not allowed:
        return False
    bracketed = f"[{host}]" if ":" in host else host
    return bool({host, bracketed, f"{bracketed}:{port}"} & allowed)
