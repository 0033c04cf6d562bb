"""The SSRF guard's decision, without traffic: classification of every address form, and the
resolution step with a scripted resolver (a name that resolves to a private address cannot be
produced by real DNS on this closed network, so the resolver is substituted — it is the only fake)."""

from __future__ import annotations

import ipaddress

import pytest

from polysocket_core.errors import ErrorCode, PolysocketError
from router_fn.ssrf import check_target, is_blocked, literal_ip, parse_cidrs, system_resolve

BLOCKED = [
    "127.0.0.1", "::1", "10.0.0.1", "10.255.255.255", "172.16.0.1", "172.31.255.254", "192.168.0.1",
    "169.254.169.254", "fe80::1", "fc00::1", "fd12:3456::1", "100.64.0.1", "100.127.255.254", "0.0.0.0",
    "::", "224.0.0.1", "ff02::1", "240.0.0.1", "255.255.255.255", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
    "::ffff:169.254.169.254", "2002:7f00:1::", "198.18.0.1", "192.0.2.1",
    "64:ff9b::a00:1", "64:ff9b::7f00:1", "64:ff9b:1::a00:1", "::ffff:0:a00:1", "fec0::1",  # NAT64 / SIIT / site-local
]
PUBLIC = ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "1.1.1.1", "64:ff9b::808:808"]


@pytest.mark.parametrize("addr", BLOCKED)
def test_non_public_addresses_are_blocked(addr: str) -> None:
    assert is_blocked(ipaddress.ip_address(addr), [])


@pytest.mark.parametrize("addr", PUBLIC)
def test_public_addresses_pass(addr: str) -> None:
    assert not is_blocked(ipaddress.ip_address(addr), [])


@pytest.mark.parametrize(("host", "ip"), [
    ("2130706433", "127.0.0.1"), ("0x7f000001", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"),
    ("127.1", "127.0.0.1"), ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"), ("167772161", "10.0.0.1"),
    ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"), ("127.0.0.1.", "127.0.0.1"), ("[::1]", "::1"),
])
def test_legacy_literal_forms_are_decoded(host: str, ip: str) -> None:
    assert literal_ip(host) == ipaddress.ip_address(ip)


@pytest.mark.parametrize("host", ["example.com", "localhost", "1.2.3.4.5", "0x", ""])
def test_names_are_not_literals(host: str) -> None:
    assert literal_ip(host) is None


def test_allowlist_permits_only_its_ranges() -> None:
    allow = parse_cidrs("127.0.0.0/8, ::1/128")
    assert not is_blocked(ipaddress.ip_address("127.0.0.1"), allow)
    assert not is_blocked(ipaddress.ip_address("::1"), allow)
    assert not is_blocked(ipaddress.ip_address("::ffff:127.0.0.1"), allow)
    assert is_blocked(ipaddress.ip_address("10.0.0.1"), allow)
    assert is_blocked(ipaddress.ip_address("169.254.169.254"), allow)
    with pytest.raises(ValueError):
        parse_cidrs("10.0.0.0/33")


def scripted(answers: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> list[str]:
        if host not in answers:
            raise OSError(f"no such host {host}")
        return answers[host]
    return resolve


async def test_name_resolving_to_private_address_is_blocked() -> None:
    resolve = scripted({"intranet.example.com": ["10.1.2.3"], "mixed.example.com": ["93.184.216.34", "10.0.0.1"],
                        "metadata.example.com": ["169.254.169.254"]})
    for host in ("intranet.example.com", "mixed.example.com", "metadata.example.com"):
        with pytest.raises(PolysocketError) as err:
            await check_target(f"wss://{host}/", [], resolve)
        assert err.value.code is ErrorCode.BLOCKED_TARGET
        assert "10." not in err.value.message and "169.254" not in err.value.message  # no internal addresses


async def test_public_name_is_pinned_to_checked_addresses() -> None:
    resolve = scripted({"echo.example.com": ["93.184.216.34", "2606:2800:220:1::1", "93.184.216.34"]})
    assert await check_target("wss://echo.example.com./x", [], resolve) == ["93.184.216.34", "2606:2800:220:1::1"]


async def test_unresolvable_name_is_upstream_failed() -> None:
    with pytest.raises(PolysocketError) as err:
        await check_target("wss://nowhere.invalid/", [], scripted({}))
    assert err.value.code is ErrorCode.UPSTREAM_FAILED


@pytest.mark.parametrize("target", [
    "ws://127.0.0.1/", "ws://[::1]/", "ws://2130706433/", "ws://0x7f000001/", "ws://0177.0.0.1/", "ws://127.1/",
    "ws://10.0.0.1/", "ws://172.16.0.1/", "ws://192.168.1.1/", "ws://169.254.169.254/latest/meta-data/",
    "ws://100.64.0.1/", "ws://0.0.0.0/", "ws://[::ffff:127.0.0.1]/", "ws://[fe80::1]/",
])
async def test_literal_targets_blocked_without_resolving(target: str) -> None:
    with pytest.raises(PolysocketError) as err:
        await check_target(target, [], scripted({}))  # the resolver is never asked
    assert err.value.code is ErrorCode.BLOCKED_TARGET


async def test_real_resolver_on_localhost_forms() -> None:
    """The system resolver on loopback names only (no traffic): localhost and localhost. are blocked."""
    for target in ("ws://localhost/", "ws://localhost./"):
        with pytest.raises(PolysocketError) as err:
            await check_target(target, [], system_resolve)
        assert err.value.code is ErrorCode.BLOCKED_TARGET
