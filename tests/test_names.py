"""Name templates: parsing, expansion, validity, first-registered-wins, config errors."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

import pytest

from config import ConfigError
from hosts import render_named_hosts
from main import main
from names import Entry, assign_names, compile_rules, is_valid_name, parse_template
from tests.fakes import FakeClock

StartApp = Callable[..., Any]
T0 = datetime(2026, 1, 1, tzinfo=UTC)

ICPC = ("{hostname}.{label.site}.{domain}", "{hostname}.{domain}", "{hostname}")


def entry(address: str, hostname: str | None, minutes: int = 0, **labels: str) -> Entry:
    return Entry("contest", address, hostname, labels or None, T0 + timedelta(minutes=minutes))


def naming(entries: list[Entry], templates: tuple[str, ...] = ICPC) -> Any:
    return assign_names(entries, compile_rules({"contest": templates}), "icpcnet.internal")


def test_the_icpc_hosts_lines() -> None:
    result = naming([entry("fd00::42", "t42", site="Site"), entry("fd00::7", "t7")])
    assert render_named_hosts(result) == (
        "fd00::7 t7.icpcnet.internal t7\n"  # no site label: that template is skipped
        "fd00::42 t42.site.icpcnet.internal t42.icpcnet.internal t42\n"
    )
    assert result.collisions == []


def test_the_default_template_is_hostname_fleet_domain() -> None:
    result = assign_names([entry("fd00::2", "excavator")], {}, "fleet.test")
    assert result.names == {("contest", "fd00::2"): ("excavator.contest.fleet.test",)}


def test_unnamed_clients_publish_nothing() -> None:
    assert naming([entry("fd00::2", None, site="ucf")]).names == {}


@pytest.mark.parametrize(
    ("value", "published"),
    [
        ("UCF", "t1.ucf.icpcnet.internal"),  # lowercased first
        ("a.b", "t1.a.b.icpcnet.internal"),  # a dot makes two name labels: still valid
        ("", None),  # an empty name label
        ("u c f", None),
        ("x" * 64, None),  # a name label over 63 characters
        ("é", None),
    ],
)
def test_label_values_must_give_valid_names(value: str, published: str | None) -> None:
    result = naming([entry("fd00::2", "t1", site=value)], ("{hostname}.{label.site}.{domain}",))
    assert result.names.get(("contest", "fd00::2")) == ((published,) if published else None)


def test_names_longer_than_253_are_skipped() -> None:
    assert is_valid_name(".".join(["a" * 63] * 4)[:253])
    assert not is_valid_name(".".join(["a" * 63] * 4))
    labels = {key: key * 63 for key in "abcd"}
    long = naming(
        [entry("fd00::2", "t1", **labels)],
        ("{label.a}.{label.b}.{label.c}.{label.d}", "{label.a}.{label.b}.{hostname}"),
    )
    assert long.names == {("contest", "fd00::2"): (f"{'a' * 63}.{'b' * 63}.t1",)}


def test_the_earlier_registered_client_keeps_a_contested_name() -> None:
    # Listed in registration order, as the database query returns them.
    first = entry("fd00::5", "t1", minutes=0)
    later = entry("fd00::3", "t1", minutes=5)
    result = naming([first, later], ("{hostname}.{domain}", "{hostname}.{label.site}"))
    assert result.names == {("contest", "fd00::5"): ("t1.icpcnet.internal",)}
    assert result.collisions == [
        "t1.icpcnet.internal is left out for fd00::3 (fleet contest): fd00::5 (fleet "
        "contest) registered earlier and keeps it"
    ]


def test_a_client_repeating_a_name_lists_it_once() -> None:
    result = naming([entry("fd00::2", "t1")], ("{hostname}", "{hostname}"))
    assert result.names == {("contest", "fd00::2"): ("t1",)}


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{host}", "unknown placeholder {host}"),
        ("{label.Site}", "label 'Site'"),
        ("{label.job}", "'job' is reserved"),
        ("{hostname", "unmatched"),
        ("{hostname}.Domain", "may only hold"),
    ],
)
def test_bad_templates_are_refused(template: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_template(template)


def test_an_unknown_placeholder_exits_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "wg-fleet.yaml"
    config.write_text(
        "domain: fleet.test\nprune_timeout: 30m\n"
        "fleets:\n  alpha:\n    ip6: fd00:1::1\n    subnet: fd00:1::/64\n"
        "    external_ip: 192.0.2.1\n    port: 51820\n"
        "    names: ['{hostname}.{team}.{domain}']\n"
    )
    assert main(["--config", str(config)]) == 2
    assert capsys.readouterr().err == (
        f"{config}: fleets.alpha.names: the name template '{{hostname}}.{{team}}.{{domain}}' "
        "has the unknown placeholder {team}; use {hostname}, {fleet}, {domain} or "
        "{label.KEY}.\n"
    )


def test_a_fleets_names_replace_the_top_level_ones(make_config: Callable[..., Any]) -> None:
    fleets = make_config().model_dump()["fleets"]
    fleets["beta"]["names"] = ["{hostname}"]
    config = make_config(names=["{hostname}.{domain}"], fleets=fleets)
    assert config.names_of("alpha") == ("{hostname}.{domain}",)
    assert config.names_of("beta") == ("{hostname}",)
    with pytest.raises(ConfigError, match="at least one"):
        make_config(names=[])


@pytest.mark.both_backends
async def test_collisions_resolve_the_same_way_after_a_restart(
    start_app: StartApp,
    make_config: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
    clock: FakeClock,
) -> None:
    """Two fleets whose clients would both publish `t1.fleet.test`: the earlier keeps it."""
    config = make_config(names=["{hostname}.{domain}", "{hostname}.{fleet}.{domain}"])
    async with start_app(config) as running:
        addresses = {}
        for fleet, ip in (("beta", "fd00:2::1"), ("alpha", "fd00:1::1")):
            async with running.client() as http:
                address = (await http.post(f"/fleet/{fleet}/register")).json()["address"]
            async with running.in_tunnel(address, ip) as tunnel:
                await tunnel.post(f"/fleet/{fleet}/ping", json={"hostname": "t1"})
            addresses[fleet] = address
            clock.advance(minutes=1)
        hosts = running.context.config.hosts_file
        first = hosts.read_text()
    expected = sorted(
        [
            f"{addresses['beta']} t1.fleet.test t1.beta.fleet.test\n",
            f"{addresses['alpha']} t1.alpha.fleet.test\n",
        ],
        key=lambda line: IPv6Address(line.split()[0]),
    )
    assert first == "".join(expected)
    hosts.unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hosts"):
        async with start_app(config):
            pass
    assert hosts.read_text() == first
    assert f"t1.fleet.test is left out for {addresses['alpha']} (fleet alpha)" in caplog.text
