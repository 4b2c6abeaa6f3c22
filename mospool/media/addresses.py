"""Which IP addresses media may be fetched from: globally reachable unicast, per IANA's registries.

The data below is the IANA IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890 and its updates;
iana-ipv4-special-registry and iana-ipv6-special-registry, as updated in 2025), kept here rather than taken
from Python's ``ipaddress.is_global``, which lags them (3.11 lets 192.0.0.8, 192.88.99.1, 5f00::/16 and
::ffff:0:7f00:1 through). An address is judged by the most specific block that holds it: a block that is not
globally reachable refuses it, one that is (the anycast services inside 192.0.0.0/24 and 2001::/23) lets it
through. Multicast and, for IPv6, anything outside the global unicast space 2000::/3 are refused too. The
IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64, 6to4, Teredo) are judged by the IPv4
addresses they carry (``embedded_ipv4``), since that is what a packet to them reaches.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Reach(enum.Enum):
    GLOBAL = "globally reachable"
    LOCAL = "not globally reachable"
    CARRIER = "judged by the IPv4 address it carries"


@dataclass(frozen=True)
class Block:
    network: Network
    name: str
    reach: Reach


def _blocks(reach: Reach, *entries: tuple[str, str]) -> list[Block]:
    return [Block(ipaddress.ip_network(prefix), name, reach) for prefix, name in entries]


LOCAL, GLOBAL, CARRIER = Reach.LOCAL, Reach.GLOBAL, Reach.CARRIER

IPV4_REGISTRY = [
    *_blocks(
        LOCAL,
        ("0.0.0.0/8", '"This network" (RFC 791)'),
        ("0.0.0.0/32", '"This host on this network" (RFC 1122)'),
        ("10.0.0.0/8", "Private-Use (RFC 1918)"),
        ("100.64.0.0/10", "Shared Address Space (RFC 6598)"),
        ("127.0.0.0/8", "Loopback (RFC 1122)"),
        ("169.254.0.0/16", "Link Local (RFC 3927)"),
        ("172.16.0.0/12", "Private-Use (RFC 1918)"),
        ("192.0.0.0/24", "IETF Protocol Assignments (RFC 6890)"),
        ("192.0.0.0/29", "IPv4 Service Continuity Prefix (RFC 7335)"),
        ("192.0.0.8/32", "IPv4 dummy address (RFC 7600)"),
        ("192.0.0.170/32", "NAT64/DNS64 Discovery (RFC 8880)"),
        ("192.0.0.171/32", "NAT64/DNS64 Discovery (RFC 8880)"),
        ("192.0.2.0/24", "Documentation, TEST-NET-1 (RFC 5737)"),
        ("192.88.99.0/24", "Deprecated 6to4 Relay Anycast (RFC 7526)"),
        ("192.168.0.0/16", "Private-Use (RFC 1918)"),
        ("198.18.0.0/15", "Benchmarking (RFC 2544)"),
        ("198.51.100.0/24", "Documentation, TEST-NET-2 (RFC 5737)"),
        ("203.0.113.0/24", "Documentation, TEST-NET-3 (RFC 5737)"),
        ("240.0.0.0/4", "Reserved (RFC 1112)"),
        ("255.255.255.255/32", "Limited Broadcast (RFC 8190)"),
        ("224.0.0.0/4", "Multicast (RFC 5771): not unicast"),
    ),
    *_blocks(
        GLOBAL,
        ("192.0.0.9/32", "Port Control Protocol Anycast (RFC 7723)"),
        ("192.0.0.10/32", "Traversal Using Relays around NAT Anycast (RFC 8155)"),
        ("192.31.196.0/24", "AS112-v4 (RFC 7535)"),
        ("192.52.193.0/24", "AMT (RFC 7450)"),
        ("192.175.48.0/24", "Direct Delegation AS112 Service (RFC 7534)"),
    ),
]

IPV6_REGISTRY = [
    *_blocks(
        LOCAL,
        ("::1/128", "Loopback Address (RFC 4291)"),
        ("::/128", "Unspecified Address (RFC 4291)"),
        ("64:ff9b:1::/48", "IPv4-IPv6 Translation, local use (RFC 8215)"),
        ("100::/64", "Discard-Only Address Block (RFC 6666)"),
        ("100:0:0:1::/64", "Dummy IPv6 Prefix (RFC 9780)"),
        ("2001::/23", "IETF Protocol Assignments (RFC 2928)"),
        ("2001:2::/48", "Benchmarking (RFC 5180)"),
        ("2001:10::/28", "Deprecated ORCHID (RFC 4843)"),
        ("2001:db8::/32", "Documentation (RFC 3849)"),
        ("3fff::/20", "Documentation (RFC 9637)"),
        ("5f00::/16", "Segment Routing (SRv6) SIDs (RFC 9602)"),
        ("fc00::/7", "Unique-Local (RFC 4193)"),
        ("fe80::/10", "Link-Local Unicast (RFC 4291)"),
        ("ff00::/8", "Multicast (RFC 4291): not unicast"),
    ),
    *_blocks(
        GLOBAL,
        ("2001:1::1/128", "Port Control Protocol Anycast (RFC 7723)"),
        ("2001:1::2/128", "Traversal Using Relays around NAT Anycast (RFC 8155)"),
        ("2001:1::3/128", "DNS-SD Service Registration Protocol Anycast (RFC 9665)"),
        ("2001:3::/32", "AMT (RFC 7450)"),
        ("2001:4:112::/48", "AS112-v6 (RFC 7535)"),
        ("2001:20::/28", "ORCHIDv2 (RFC 7343)"),
        ("2001:30::/28", "Drone Remote ID Protocol Entity Tags (RFC 9374)"),
        ("2620:4f:8000::/48", "Direct Delegation AS112 Service (RFC 7534)"),
    ),
    *_blocks(
        CARRIER,
        ("::ffff:0:0/96", "IPv4-mapped Address (RFC 4291)"),
        ("::/96", "IPv4-compatible Address, deprecated (RFC 4291)"),
        ("64:ff9b::/96", "IPv4-IPv6 Translation (RFC 6052)"),
        ("2001::/32", "TEREDO (RFC 4380)"),
        ("2002::/16", "6to4 (RFC 3056)"),
    ),
]

GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")  # IANA's IPv6 Address Space: the rest is reserved
# IPv4-compatible, NAT64 and local-use NAT64: the last 32 bits are the IPv4 address.
LAST_32_BITS_IPV4 = tuple(ipaddress.IPv6Network(p) for p in ("::/96", "64:ff9b::/96", "64:ff9b:1::/48"))


def block_of(ip: Address) -> Block | None:
    """The most specific registry block holding ``ip``, or None (an ordinary address)."""
    registry = IPV4_REGISTRY if ip.version == 4 else IPV6_REGISTRY
    found = [block for block in registry if ip in block.network]
    return max(found, key=lambda block: block.network.prefixlen, default=None)


def why_not_global(ip: Address) -> str | None:
    """Why ``ip`` is not a globally reachable unicast address, or None when it is one."""
    block = block_of(ip)
    if block is not None and block.reach is Reach.LOCAL:
        return f"{ip} is in {block.network}, {block.name}"
    if block is not None and block.reach is Reach.CARRIER:
        carried = embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else []
        for ipv4 in carried:
            problem = why_not_global(ipv4)
            if problem:
                return f"{ip} carries IPv4 {ipv4}, and {problem}"
        return None if carried else f"{ip} is in {block.network}, {block.name}"
    if block is None and isinstance(ip, ipaddress.IPv6Address) and ip not in GLOBAL_UNICAST:
        return f"{ip} is outside the global unicast space {GLOBAL_UNICAST}"
    return None


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries: what a packet to it ends up reaching.

    IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::/96) and local-use NAT64
    (64:ff9b:1::/48, with the usual /96 layout: the last 32 bits), 6to4 (2002::/16, bits 16-47) and Teredo
    (2001::/32: the server in bits 32-63, the client in the last 32 bits inverted).
    """
    if ip.ipv4_mapped:
        return [ip.ipv4_mapped]
    if any(ip in network for network in LAST_32_BITS_IPV4):
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    if ip.sixtofour:
        return [ip.sixtofour]
    if ip.teredo:
        return list(ip.teredo)
    return []
