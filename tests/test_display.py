"""What admins see of a client: relative and absolute times, short keys, view models."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from database import Client
from display import client_view, relative_time, short_key, utc_text
from wireguard import InterfaceDump, PeerStatus

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
STARTED = NOW - timedelta(hours=2)
KEY = "kKsWcnBXKSafaGbZ2M6EXhRQZfDWaXEVgxVCBmtIPmw="


@pytest.mark.parametrize(
    ("age", "text"),
    [
        (timedelta(0), "0 s ago"),
        (timedelta(seconds=59), "59 s ago"),
        (timedelta(seconds=60), "1 min ago"),
        (timedelta(minutes=3, seconds=59), "3 min ago"),
        (timedelta(minutes=59, seconds=59), "59 min ago"),
        (timedelta(hours=1), "1 h ago"),
        (timedelta(hours=23, minutes=59), "23 h ago"),
        (timedelta(days=1), "1 d ago"),
        (timedelta(days=400), "400 d ago"),
        (timedelta(seconds=-5), "just now"),
    ],
)
def test_relative_time(age: timedelta, text: str) -> None:
    assert relative_time(NOW - age, NOW) == text


def test_relative_time_without_a_moment_is_not_available() -> None:
    assert relative_time(None, NOW) == "N/A"


def test_utc_text() -> None:
    assert utc_text(datetime(2026, 1, 2, 3, 4, 5, 999, tzinfo=UTC)) == "2026-01-02 03:04:05 UTC"
    assert utc_text(None) == "N/A"


def test_short_key_keeps_both_ends() -> None:
    assert short_key(KEY) == "kKsWcnBX…tIPmw="
    assert len(short_key(KEY)) == 15


def row(
    *,
    hostname: str | None = None,
    registered_at: datetime = NOW - timedelta(hours=1),
    last_seen: datetime | None = None,
    last_handshake: datetime | None = None,
) -> Client:
    seen = last_seen or registered_at
    return Client(
        fleet="alpha",
        address="fd00:1::10",
        public_key=KEY,
        hostname=hostname,
        source_ip="192.0.2.7",
        registered_at=registered_at,
        last_seen=seen,
        last_handshake=last_handshake,
        last_active=max(m for m in (seen, last_handshake) if m is not None),
    )


def dump_with(handshake: datetime | None) -> InterfaceDump:
    epoch = int(handshake.timestamp()) if handshake else 0
    peer = PeerStatus(KEY, None, "fd00:1::10/128", epoch)
    return InterfaceDump(public_key="server", listen_port=51820, peers={KEY: peer})


def test_a_named_client_has_its_fqdn() -> None:
    shown = client_view(
        row(hostname="excavator"), domain="fleet.test", dump=None, now=NOW, started_at=STARTED
    )
    assert (shown.hostname, shown.fqdn) == ("excavator", "excavator.alpha.fleet.test")
    assert (shown.address, shown.public_key, shown.source_ip) == ("fd00:1::10", KEY, "192.0.2.7")


def test_an_unnamed_client_without_handshake() -> None:
    shown = client_view(row(), domain="fleet.test", dump=None, now=NOW, started_at=STARTED)
    assert (shown.hostname, shown.fqdn, shown.last_handshake) == (None, None, None)
    assert shown.online is False
    assert (shown.alive_because, shown.last_activity) == ("registration", NOW - timedelta(hours=1))


@pytest.mark.parametrize(
    ("stored", "live", "shown"),
    [
        (None, NOW - timedelta(seconds=30), NOW - timedelta(seconds=30)),
        (NOW - timedelta(minutes=10), NOW - timedelta(seconds=30), NOW - timedelta(seconds=30)),
        (NOW - timedelta(seconds=30), NOW - timedelta(minutes=10), NOW - timedelta(seconds=30)),
        (NOW - timedelta(minutes=10), None, NOW - timedelta(minutes=10)),
    ],
)
def test_the_newer_of_the_stored_and_the_live_handshake_is_shown(
    stored: datetime | None, live: datetime | None, shown: datetime
) -> None:
    result = client_view(
        row(last_handshake=stored),
        domain="fleet.test",
        dump=dump_with(live),
        now=NOW,
        started_at=STARTED,
    )
    assert result.last_handshake == shown


@pytest.mark.parametrize(
    ("age", "online"),
    [
        (timedelta(seconds=0), True),
        (timedelta(minutes=2, seconds=59), True),
        (timedelta(minutes=3), False),
        (timedelta(hours=1), False),
    ],
)
def test_online_means_a_handshake_under_three_minutes_old(age: timedelta, online: bool) -> None:
    result = client_view(
        row(), domain="fleet.test", dump=dump_with(NOW - age), now=NOW, started_at=STARTED
    )
    assert result.online is online


@pytest.mark.parametrize(
    ("client", "because", "activity"),
    [
        (row(registered_at=NOW - timedelta(minutes=5)), "registration", NOW - timedelta(minutes=5)),
        (
            row(last_seen=NOW - timedelta(minutes=2)),
            "ping",
            NOW - timedelta(minutes=2),
        ),
        (
            row(last_seen=NOW - timedelta(minutes=20), last_handshake=NOW - timedelta(minutes=1)),
            "handshake",
            NOW - timedelta(minutes=1),
        ),
        (row(registered_at=NOW - timedelta(days=3)), "grace", STARTED),
    ],
)
def test_alive_because_names_the_latest_activity(
    client: Client, because: str, activity: datetime
) -> None:
    result = client_view(client, domain="fleet.test", dump=None, now=NOW, started_at=STARTED)
    assert (result.alive_because, result.last_activity) == (because, activity)
