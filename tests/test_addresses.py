"""The SSRF guard against IANA's special-purpose registries: every entry, through the real check_url.

Each block of mospool/media/addresses.py is tested with an address that it (and no more specific block)
holds: the blocks that are not globally reachable refuse it, the ones that are let it through, and the
blocks whose addresses carry an IPv4 address are judged by it. URLs are IP literals: no DNS, no connection.
"""

from __future__ import annotations

import ipaddress

import pytest

from mospool.config import MediaSettings
from mospool.media import MediaError, check_url
from mospool.media.addresses import IPV4_REGISTRY, IPV6_REGISTRY, Block, Reach, block_of

GUARDED = MediaSettings()  # allow_private_networks = no, as in production


def sample(block: Block) -> str:
    """An address of the block that no more specific block holds."""
    network = block.network
    candidates = [network.network_address, network.broadcast_address]
    candidates += [
        network.network_address + step
        for step in (1, 2, 5, 17, 255, 4096, 65537)
        if step < network.num_addresses
    ]
    candidates += [network.broadcast_address - step for step in (1, 2, 255) if step < network.num_addresses]
    for candidate in candidates:
        if block_of(candidate) == block:
            return str(candidate)
    raise AssertionError(f"no address of {network} that only it holds")


def url_of(address: str) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}/x.jpg"


def refused(address: str) -> bool:
    try:
        check_url(url_of(address), GUARDED)
    except MediaError as error:
        assert error.permanent and str(error).startswith("refused: "), error
        return True
    return False


LOCAL = [block for block in IPV4_REGISTRY + IPV6_REGISTRY if block.reach is Reach.LOCAL]
GLOBAL = [block for block in IPV4_REGISTRY + IPV6_REGISTRY if block.reach is Reach.GLOBAL]
CARRIERS = [block for block in IPV6_REGISTRY if block.reach is Reach.CARRIER]


@pytest.mark.parametrize("block", LOCAL, ids=lambda block: str(block.network))
def test_every_block_that_is_not_globally_reachable_is_refused(block: Block) -> None:
    address = sample(block)
    with pytest.raises(MediaError, match=rf"in {block.network}, {block.name.split(' (')[0]}"):
        check_url(url_of(address), GUARDED)


@pytest.mark.parametrize("block", GLOBAL, ids=lambda block: str(block.network))
def test_every_globally_reachable_exception_is_allowed(block: Block) -> None:
    assert not refused(sample(block))


def carrying(block: Block, ipv4: str) -> str:
    """An address of a carrier block that carries ``ipv4``."""
    value = int(ipaddress.IPv4Address(ipv4))
    forms = {
        "::ffff:0:0/96": f"::ffff:{ipv4}",
        "::/96": f"::{ipv4}",
        "64:ff9b::/96": f"64:ff9b::{ipv4}",
        "2002::/16": str(ipaddress.IPv6Address((0x2002 << 112) | (value << 80) | 1)),
        # Teredo: a public server (8.8.4.4) in bits 32-63, the client in the last 32 bits, inverted
        "2001::/32": str(
            ipaddress.IPv6Address((0x20010000 << 96) | (0x08080404 << 64) | (value ^ 0xFFFFFFFF))
        ),
    }
    return forms[str(block.network)]


@pytest.mark.parametrize("block", CARRIERS, ids=lambda block: str(block.network))
def test_every_block_that_carries_an_ipv4_is_judged_by_it(block: Block) -> None:
    public, private = carrying(block, "8.8.8.8"), carrying(block, "10.1.2.3")
    assert block_of(ipaddress.IPv6Address(public)) == block
    assert not refused(public)
    with pytest.raises(MediaError, match=r"carries IPv4 10\.1\.2\.3, and 10\.1\.2\.3 is in 10\.0\.0\.0/8"):
        check_url(url_of(private), GUARDED)


@pytest.mark.parametrize(
    "address",
    [
        "192.0.0.8",
        "192.88.99.1",
        "5f00::1",
        "::ffff:0:7f00:1",
        "224.0.0.1",
        "ff02::1",
        "4000::1",
        "100:0:0:1::1",
    ],
)
def test_the_addresses_pythons_is_global_let_through_are_refused(address: str) -> None:
    assert refused(address)


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "2a00:1450:4001:82b::200e", "2606:4700:4700::1111"]
)
def test_ordinary_public_addresses_are_allowed(address: str) -> None:
    assert not refused(address)


def test_a_very_long_url_is_refused_before_anything_else() -> None:
    with pytest.raises(MediaError, match="longer than 8192 characters"):
        check_url("http://8.8.8.8/" + "a" * 9000, GUARDED)
