"""The slot and certificate decisions (pure), and the settings that switch them on."""

from __future__ import annotations

import datetime as dt

import pytest

from polysocket_core.settings import SettingError, resolve
from relay_node.control.aws.settings import CloudSettings, duration, show_duration
from relay_node.control.aws.slots import (
    CertAction,
    CertFacts,
    SlotKeys,
    cert_action,
    cert_names,
    choose_slot,
    next_check,
    parse_relay_domain,
    slot_fqdn,
    slot_names,
)
from relay_node.settings import RelayConfig

NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
NAMES = ("s01.relay.test", "*.s01.relay.test")


def test_slot_names() -> None:
    assert slot_names(3) == ["s00", "s01", "s02"]
    assert slot_names(100)[-1] == "s99"
    assert slot_names(101)[:2] == ["s000", "s001"] and slot_names(101)[-1] == "s100"
    for bad in (0, 1001):
        with pytest.raises(ValueError):
            slot_names(bad)


def test_relay_domain_names() -> None:
    assert parse_relay_domain("Relay.Example.com.") == ("relay.example.com", None)
    assert parse_relay_domain("relay.test:8443") == ("relay.test", 8443)
    assert slot_fqdn("s03", "relay.test:8443") == "s03.relay.test:8443"
    assert slot_fqdn("s03", "relay.example.com") == "s03.relay.example.com"
    assert cert_names("s03", "relay.test:8443") == ("s03.relay.test", "*.s03.relay.test")
    for bad in ("localhost", "relay.test:0", "relay.test:x", "-a.test", "a..test", "*.relay.test", "a/b.test"):
        with pytest.raises(ValueError):
            parse_relay_domain(bad)


def test_keys() -> None:
    k = SlotKeys("ps:")
    assert (k.lease("s00"), k.cert_lock("s00"), k.account_lock) == ("ps:slot:s00", "ps:slot:s00:certlock",
                                                                    "ps:acme:accountlock")


def test_choose_slot_lowest_free_first() -> None:
    names = slot_names(4)
    assert choose_slot(names, {}, "a") == "s00"
    assert choose_slot(names, {"s00": "b", "s01": None, "s02": "c"}, "a") == "s01"
    assert choose_slot(names, {"s00": "b", "s01": "c", "s02": "d", "s03": "e"}, "a") is None


def test_choose_slot_gives_a_restarted_node_its_own_slot_back() -> None:
    names = slot_names(4)
    assert choose_slot(names, {"s00": None, "s02": "a"}, "a") == "s02"


def _facts(names: tuple[str, ...] = NAMES, start: dt.datetime = NOW - 10 * DAY,
           days: int = 90) -> CertFacts:
    return CertFacts(frozenset(names), start, start + days * DAY)


@pytest.mark.parametrize(("facts", "action"), [
    (None, CertAction.ORDER),
    (_facts(), CertAction.USE),  # 80 days left
    (_facts(start=NOW - 60 * DAY), CertAction.RENEW),  # exactly 30 left: due
    (_facts(start=NOW - 59 * DAY), CertAction.USE),  # 31 left
    (_facts(start=NOW - 89 * DAY), CertAction.RENEW),  # a day left: served while renewing
    (_facts(start=NOW - 90 * DAY), CertAction.ORDER),  # expired now
    (_facts(start=NOW + DAY), CertAction.ORDER),  # not valid yet
    (_facts(names=("s01.relay.test",)), CertAction.ORDER),  # no wildcard
    (_facts(names=("s02.relay.test", "*.s02.relay.test")), CertAction.ORDER),  # another slot's
])
def test_cert_action(facts: CertFacts | None, action: CertAction) -> None:
    assert cert_action(facts, NAMES, NOW, 30 * DAY) is action


def test_next_check() -> None:
    interval = dt.timedelta(hours=12)
    assert next_check(_facts(), NOW, 30 * DAY, interval) == interval
    assert next_check(_facts(start=NOW - 60 * DAY + dt.timedelta(hours=2)), NOW, 30 * DAY,
                      interval) == dt.timedelta(hours=2)
    assert next_check(_facts(start=NOW - 60 * DAY + dt.timedelta(seconds=5)), NOW, 30 * DAY,
                      interval) == dt.timedelta(minutes=1)
    # already due (renewal failed, or another node renews): again within the hour, not every minute
    assert next_check(_facts(start=NOW - 80 * DAY), NOW, 30 * DAY, interval) == dt.timedelta(hours=1)
    assert next_check(_facts(start=NOW - 80 * DAY), NOW, 30 * DAY, dt.timedelta(minutes=10)) == \
        dt.timedelta(minutes=10)


def test_durations() -> None:
    assert duration("30d") == 30 * 86400 and duration("12h") == 43200 and duration("90") == 90
    assert show_duration(30 * 86400.0) == "30d" and show_duration(43200.0) == "12h" and show_duration(90.0) == "90"
    with pytest.raises(ValueError):
        duration("soon")


def test_settings_flags_and_checks() -> None:
    env = {"POLYSOCKET_RELAY_DOMAIN": "Relay.Test:8443", "POLYSOCKET_SLOT_COUNT": "4",
           "POLYSOCKET_ACME_DIRECTORY": "https://127.0.0.1:14000/dir", "POLYSOCKET_ROUTE53_ZONE_ID": "Z1",
           "POLYSOCKET_RENEW_BEFORE": "20d"}
    s = resolve(CloudSettings, env)
    assert (s.relay_domain, s.slot_count, s.renew_before_s, s.cert_store) == ("relay.test:8443", 4, 20 * 86400,
                                                                               "secretsmanager")
    assert s.slots_enabled and s.certs_enabled
    assert not CloudSettings().slots_enabled and not CloudSettings().certs_enabled
    for bad, message in [
        ({"POLYSOCKET_ROUTE53_ZONE_ID": ""}, "--route53-zone-id"),
        ({"POLYSOCKET_RELAY_DOMAIN": ""}, "--relay-domain"),
        ({"POLYSOCKET_CERT_STORE": "s3"}, "--cert-bucket"),
        ({"POLYSOCKET_CERT_STORE": "disk"}, "secretsmanager, s3"),
        ({"POLYSOCKET_RELAY_DOMAIN": "localhost"}, "two labels"),
        ({"POLYSOCKET_SLOT_COUNT": "1001"}, "at most 1000"),
    ]:
        with pytest.raises(SettingError, match=message):
            resolve(CloudSettings, {**env, **bad})


def test_relay_refuses_a_certificate_file_with_acme() -> None:
    cloud = CloudSettings(relay_domain="relay.test", acme_directory="https://x.test/dir", zone_id="Z1")
    with pytest.raises(SettingError, match="exclude each other"):
        RelayConfig(ssl_certfile="c.pem", ssl_keyfile="k.pem", cloud=cloud)
