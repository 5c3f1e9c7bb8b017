"""config.py: every validation, with the exact sentence the operator reads."""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from config import (
    DEFAULT_DATABASE,
    DEFAULT_HOST,
    DEFAULT_HOSTS_FILE,
    DEFAULT_PORT,
    DEFAULT_WIREGUARD_DIR,
    Config,
    ConfigError,
    FleetConfig,
    load_config,
    parse_config,
    parse_duration,
)

SOURCE = "test.yaml"
EXAMPLE = Path(__file__).resolve().parent.parent / "example-config.yaml"

FLEET: dict[str, Any] = {
    "ip6": "fd00:a0a8:34d:2a00::1",
    "subnet": "fd00:a0a8:34d:2a00::/64",
    "external_ip": "1.2.3.4",
    "port": 51820,
}
BASE: dict[str, Any] = {
    "domain": "icpcnet.internal",
    "prune_timeout": "30m",
    "fleets": {"southeast": FLEET},
}

Mutation = Callable[[dict[str, Any]], None]


def settings(mutate: Mutation | None = None) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    if mutate is not None:
        mutate(data)
    return data


def fleet(**changes: Any) -> dict[str, Any]:
    return {**FLEET, **changes}


def set_fleet(**changes: Any) -> Mutation:
    return lambda data: data["fleets"]["southeast"].update(changes)


def error_of(data: object) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, SOURCE)
    return str(caught.value)


def test_minimal_config_gets_defaults() -> None:
    config = parse_config(settings(), SOURCE)
    assert config.domain == "icpcnet.internal"
    assert config.prune_timeout == timedelta(minutes=30)
    assert config.prune_interval == timedelta(minutes=1)
    assert config.database == DEFAULT_DATABASE
    assert config.hosts_file == DEFAULT_HOSTS_FILE
    assert config.wireguard_dir == DEFAULT_WIREGUARD_DIR
    assert (config.listen.host, config.listen.port) == (DEFAULT_HOST, DEFAULT_PORT)
    assert config.trusted_proxies == ()
    assert config.hostname_separator == ""
    southeast = config.fleets["southeast"]
    assert southeast.ip6 == ipaddress.IPv6Address("fd00:a0a8:34d:2a00::1")
    assert southeast.persistent_keepalive == 25


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        pytest.param(
            lambda d: d.update(fleets={"abcdefghijklm": FLEET}),
            "test.yaml: fleets.abcdefghijklm: fleet name 'abcdefghijklm' is longer than "
            "12 characters (the interface wg_abcdefghijklm would exceed Linux's "
            "15-character limit).",
            id="fleet-name-too-long",
        ),
        *(
            pytest.param(
                lambda d, name=name: d.update(fleets={name: FLEET}),
                f"test.yaml: fleets.{name}: fleet name {name!r} must be lowercase letters, "
                "digits, _ and -, starting with a letter or digit.",
                id=f"fleet-name-{name}",
            )
            for name in ("South", "south.east", "-south", "_south", "so uth", "")
        ),
        pytest.param(
            set_fleet(ip6="fd00:a0a8:34d:2b00::1"),
            "test.yaml: fleets.southeast.ip6: fd00:a0a8:34d:2b00::1 is not inside "
            "subnet fd00:a0a8:34d:2a00::/64.",
            id="ip6-outside-subnet",
        ),
        pytest.param(
            set_fleet(ip6="fd00:a0a8:34d:2a00::"),
            "test.yaml: fleets.southeast.ip6: fd00:a0a8:34d:2a00:: is the subnet's zero "
            "address; pick another.",
            id="ip6-zero-address",
        ),
        pytest.param(
            set_fleet(ip6="10.0.0.1"),
            "test.yaml: fleets.southeast.ip6: '10.0.0.1' is not an IPv6 address.",
            id="ip6-is-ipv4",
        ),
        pytest.param(
            set_fleet(subnet="10.0.0.0/8"),
            "test.yaml: fleets.southeast.subnet: 10.0.0.0/8 is not an IPv6 subnet.",
            id="subnet-ipv4",
        ),
        pytest.param(
            set_fleet(subnet="fd00:a0a8:34d:2a00::1/64"),
            "test.yaml: fleets.southeast.subnet: 'fd00:a0a8:34d:2a00::1/64' has host bits "
            "set; write the network fd00:a0a8:34d:2a00::/64 (or fd00:a0a8:34d:2a00::1/128 "
            "for the one address).",
            id="subnet-host-bits",
        ),
        pytest.param(
            lambda d: d["fleets"].update(
                northwest=fleet(ip6="fd00:a0a8:34d::1", subnet="fd00:a0a8:34d::/48", port=51821)
            ),
            "test.yaml: fleets.southeast.subnet: fd00:a0a8:34d:2a00::/64 overlaps the subnet "
            "fd00:a0a8:34d::/48 of fleet northwest.",
            id="overlapping-subnets",
        ),
        pytest.param(
            lambda d: d["fleets"].update(
                northwest=fleet(ip6="fd00:a0a8:34d:2000::1", subnet="fd00:a0a8:34d:2000::/64")
            ),
            "test.yaml: fleets.southeast.port: 51820 is already used by fleet northwest.",
            id="duplicate-ports",
        ),
        pytest.param(
            set_fleet(port=0),
            "test.yaml: fleets.southeast.port: Input should be greater than or equal to 1 (got 0).",
            id="port-zero",
        ),
        pytest.param(
            set_fleet(port=65536),
            "test.yaml: fleets.southeast.port: Input should be less than or equal to 65535 "
            "(got 65536).",
            id="port-too-high",
        ),
        pytest.param(
            set_fleet(external_ip="vpn_server!"),
            "test.yaml: fleets.southeast.external_ip: 'vpn_server!' is neither an IP address "
            "nor a DNS name.",
            id="external-ip-invalid",
        ),
        pytest.param(
            set_fleet(external_ip="-vpn.example.com"),
            "test.yaml: fleets.southeast.external_ip: '-vpn.example.com' is neither an IP "
            "address nor a DNS name.",
            id="external-ip-label-starts-with-dash",
        ),
        pytest.param(
            lambda d: d.update(extra_key=1),
            "test.yaml: extra_key: unknown key (check the spelling).",
            id="unknown-top-level-key",
        ),
        pytest.param(
            set_fleet(extenal_ip="1.2.3.4"),
            "test.yaml: fleets.southeast.extenal_ip: unknown key (check the spelling).",
            id="typo-in-fleet",
        ),
        pytest.param(
            lambda d: d.update(listen={"hots": "::"}),
            "test.yaml: listen.hots: unknown key (check the spelling).",
            id="typo-in-listen",
        ),
        pytest.param(
            lambda d: d.pop("domain"),
            "test.yaml: domain: is required but missing.",
            id="missing-domain",
        ),
        pytest.param(
            lambda d: d.pop("prune_timeout"),
            "test.yaml: prune_timeout: is required but missing.",
            id="missing-prune-timeout",
        ),
        pytest.param(
            lambda d: d.pop("fleets"),
            "test.yaml: fleets: is required but missing.",
            id="missing-fleets",
        ),
        pytest.param(
            lambda d: d["fleets"]["southeast"].pop("port"),
            "test.yaml: fleets.southeast.port: is required but missing.",
            id="missing-fleet-port",
        ),
        pytest.param(
            lambda d: d.update(fleets={}),
            "test.yaml: fleets: Dictionary should have at least 1 item after validation, "
            "not 0 (got {}).",
            id="empty-fleets",
        ),
        pytest.param(
            lambda d: d.update(domain="icpc net"),
            "test.yaml: domain: 'icpc net' is not a DNS domain name.",
            id="bad-domain",
        ),
        pytest.param(
            set_fleet(allowed_ips=["not-a-network"]),
            "test.yaml: fleets.southeast.allowed_ips: contains an invalid network: "
            "'not-a-network' is not an IP address or CIDR.",
            id="bad-allowed-ips",
        ),
        *(
            pytest.param(
                mutate,
                f"test.yaml: {field}: {problem}.",
                id=f"scope-id-in-{field}",
            )
            for mutate, field, problem in [
                (
                    set_fleet(ip6="fd00:a0a8:34d:2a00::1%x\nPreUp = id"),
                    "fleets.southeast.ip6",
                    "'fd00:a0a8:34d:2a00::1%x\\nPreUp = id' carries a scope ID (%…), "
                    "which is not allowed here",
                ),
                (
                    set_fleet(subnet="fd00:a0a8:34d:2a00::%eth0/64"),
                    "fleets.southeast.subnet",
                    "'fd00:a0a8:34d:2a00::%eth0/64' carries a scope ID (%…), which is not "
                    "allowed here",
                ),
                (
                    set_fleet(external_ip="fe80::1%x\nPostUp = touch /pwned"),
                    "fleets.southeast.external_ip",
                    "'fe80::1%x\\nPostUp = touch /pwned' carries a scope ID (%…), which is "
                    "not allowed here",
                ),
                (
                    set_fleet(allowed_ips=["fd00::1%x\nPostUp = id"]),
                    "fleets.southeast.allowed_ips",
                    "contains an invalid network: 'fd00::1%x\\nPostUp = id' carries a scope "
                    "ID (%…), which is not allowed here",
                ),
                (
                    set_fleet(register_from=["fe80::/64%lo"]),
                    "fleets.southeast.register_from",
                    "contains an invalid network: 'fe80::/64%lo' carries a scope ID (%…), "
                    "which is not allowed here",
                ),
                (
                    lambda d: d.update(trusted_proxies=["::1%lo"]),
                    "trusted_proxies",
                    "contains an invalid network: '::1%lo' carries a scope ID (%…), which is "
                    "not allowed here",
                ),
                (
                    lambda d: d.update(listen={"host": "fe80::1%eth0"}),
                    "listen.host",
                    "'fe80::1%eth0' carries a scope ID (%…), which is not allowed here",
                ),
            ]
        ),
        pytest.param(
            lambda d: d.update(trusted_proxies=["192.168.1.10/24"]),
            "test.yaml: trusted_proxies: contains an invalid network: '192.168.1.10/24' has "
            "host bits set; write the network 192.168.1.0/24 (or 192.168.1.10/32 for the "
            "one address).",
            id="host-bits-in-trusted-proxies",
        ),
        pytest.param(
            set_fleet(register_from=["10.1.2.3/8"]),
            "test.yaml: fleets.southeast.register_from: contains an invalid network: "
            "'10.1.2.3/8' has host bits set; write the network 10.0.0.0/8 (or 10.1.2.3/32 "
            "for the one address).",
            id="host-bits-in-register-from",
        ),
        pytest.param(
            set_fleet(allowed_ips=["fd00::1 /128"]),
            "test.yaml: fleets.southeast.allowed_ips: contains an invalid network: "
            "'fd00::1 /128' is not an IP address or CIDR.",
            id="space-in-allowed-ips",
        ),
        pytest.param(
            set_fleet(allowed_ips=["10.0.0.0/33"]),
            "test.yaml: fleets.southeast.allowed_ips: contains an invalid network: "
            "'10.0.0.0/33' has a prefix length over 32.",
            id="prefix-too-long",
        ),
        pytest.param(
            lambda d: d.update(listen={"host": "0.0.0.0\nx"}),
            "test.yaml: listen.host: '0.0.0.0\\nx' is neither an IP address nor a host name.",
            id="newline-in-listen-host",
        ),
        pytest.param(
            lambda d: d.update(allowed_hosts=["wg.example.org", "bad host"]),
            "test.yaml: allowed_hosts: 'bad host' is not a host name, a *.domain wildcard or "
            "an IP address.",
            id="bad-allowed-host",
        ),
        pytest.param(
            lambda d: d.update(allowed_hosts=["*", "wg.example.org"]),
            'test.yaml: allowed_hosts: "*" admits every host and cannot be combined with others.',
            id="star-with-others",
        ),
    ],
)
def test_invalid_config_names_field_and_problem(mutate: Mutation, message: str) -> None:
    assert error_of(settings(mutate)) == message


@pytest.mark.parametrize(
    ("external_ip", "stored", "endpoint"),
    [
        ("1.2.3.4", "1.2.3.4", "1.2.3.4:51820"),
        ("2001:db8::1", "2001:db8::1", "[2001:db8::1]:51820"),
        ("2001:0db8:0000::0001", "2001:db8::1", "[2001:db8::1]:51820"),
        ("[2001:db8::1]", "2001:db8::1", "[2001:db8::1]:51820"),
        ("VPN.Example.com.", "vpn.example.com", "vpn.example.com:51820"),
        ("localhost", "localhost", "localhost:51820"),
    ],
)
def test_external_ip_and_endpoint(external_ip: str, stored: str, endpoint: str) -> None:
    config = parse_config(settings(set_fleet(external_ip=external_ip)), SOURCE)
    southeast = config.fleets["southeast"]
    assert southeast.external_ip == stored
    assert southeast.endpoint == endpoint


def test_interface_address_uses_subnet_prefix() -> None:
    southeast = FleetConfig.model_validate(fleet(ip6="fd00::5", subnet="fd00::/56"))
    assert southeast.interface_address == "fd00::5/56"


def test_allowed_ips_default_to_server_address() -> None:
    southeast = FleetConfig.model_validate(fleet())
    assert southeast.allowed_ips == (ipaddress.ip_network("fd00:a0a8:34d:2a00::1/128"),)


def test_allowed_ips_given_are_kept() -> None:
    southeast = FleetConfig.model_validate(fleet(allowed_ips=["fd00::/8", "10.0.0.0/8"]))
    assert southeast.allowed_ips == (
        ipaddress.ip_network("fd00::/8"),
        ipaddress.ip_network("10.0.0.0/8"),
    )


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("90s", 90),
        ("30m", 1800),
        ("1h", 3600),
        ("2h30m", 9000),
        ("1d", 86400),
        ("1d2h3m4s", 93784),
        (120, 120),
        ("120", 120),
        (" 45s ", 45),
        (timedelta(minutes=2), 120),
    ],
)
def test_durations(value: object, seconds: int) -> None:
    assert parse_duration(value) == timedelta(seconds=seconds)
    config = parse_config(settings(lambda d: d.update(prune_interval=value)), SOURCE)
    assert config.prune_interval == timedelta(seconds=seconds)


UNIT_HINT = "is not a duration; use units d, h, m, s as in 90s, 30m, 1h or 2h30m"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (0, "must be a positive duration"),
        ("0", "must be a positive duration"),
        ("0s", "must be a positive duration"),
        (-5, "must be a positive duration"),
        ("-5m", f"'-5m' {UNIT_HINT}"),
        ("", f"'' {UNIT_HINT}"),
        ("5x", f"'5x' {UNIT_HINT}"),
        ("1.5h", f"'1.5h' {UNIT_HINT}"),
        ("h", f"'h' {UNIT_HINT}"),
        (True, "must be a duration such as 90s, 30m, 1h or 2h30m"),
        (False, "must be a duration such as 90s, 30m, 1h or 2h30m"),
        (1.5, "must be a duration such as 90s, 30m, 1h or 2h30m"),
        (None, "must be a duration such as 90s, 30m, 1h or 2h30m"),
    ],
)
def test_invalid_durations(value: object, problem: str) -> None:
    with pytest.raises(ValueError, match="duration") as caught:
        parse_duration(value)
    assert str(caught.value) == problem
    message = error_of(settings(lambda d: d.update(prune_timeout=value)))
    assert message == f"test.yaml: prune_timeout: {problem}."


@pytest.mark.parametrize("separator", ["", "-", "--", "_x9", "abc"])
def test_hostname_separator_allowed(separator: str) -> None:
    config = parse_config(settings(lambda d: d.update(hostname_separator=separator)), SOURCE)
    assert config.hostname_separator == separator


@pytest.mark.parametrize("separator", ["abcd", "A", ".", " ", "é"])
def test_hostname_separator_rejected(separator: str) -> None:
    assert error_of(settings(lambda d: d.update(hostname_separator=separator))) == (
        "test.yaml: hostname_separator: must be at most 3 characters from a-z, 0-9, _ and -."
    )


def test_trusted_proxies_parsed_as_networks() -> None:
    proxies = ["10.0.0.1", "192.168.0.0/16", "fd00::/8", "10.0.0.0/8", "::1"]
    config = parse_config(settings(lambda d: d.update(trusted_proxies=proxies)), SOURCE)
    assert config.trusted_proxies == tuple(
        ipaddress.ip_network(text)
        for text in ("10.0.0.1/32", "192.168.0.0/16", "fd00::/8", "10.0.0.0/8", "::1/128")
    )


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("10.0.0.1", "must be a list of IP addresses or CIDRs"),
        (
            ["10.0.0.1", "proxy.example.com"],
            "contains an invalid network: 'proxy.example.com' is not an IP address or CIDR",
        ),
    ],
)
def test_trusted_proxies_rejected(value: object, problem: str) -> None:
    message = error_of(settings(lambda d: d.update(trusted_proxies=value)))
    assert message == f"test.yaml: trusted_proxies: {problem}."


def test_config_is_immutable() -> None:
    config = parse_config(settings(), SOURCE)
    with pytest.raises(ValueError, match="frozen"):
        config.domain = "other.internal"  # type: ignore[misc]


@pytest.mark.parametrize("data", [[], "text", None, 42])
def test_parse_config_needs_a_mapping(data: object) -> None:
    assert error_of(data) == "test.yaml: the file must contain a mapping of settings."


def write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_load_config_reads_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "config.yaml", settings()))
    assert isinstance(config, Config)
    assert set(config.fleets) == {"southeast"}


def test_load_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: file not found."


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("domain: [a\nfoo: : :\n", "at line 2, column 4: expected ',' or ']', but got ':'"),
        ("domain: x\n  bad: indent\n", "at line 2, column 6: mapping values are not allowed here"),
    ],
)
def test_load_config_invalid_yaml(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: is not valid YAML {problem}."


@pytest.mark.parametrize("text", ["- a\n- b\n", "", "just text\n"])
def test_load_config_non_mapping(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: the file must contain a mapping of settings."


def test_load_config_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"domain: \xff\xfe\n")
    with pytest.raises(ConfigError, match="cannot be read") as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: cannot be read (")


def test_load_config_field_error_names_file(tmp_path: Path) -> None:
    path = write(tmp_path / "config.yaml", settings(set_fleet(port=70000)))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f"{path}: fleets.southeast.port: Input should be less than or equal to 65535 (got 70000)."
    )
    assert caught.value.field == "fleets.southeast.port"


def test_overrides_win_over_file(tmp_path: Path) -> None:
    data = settings(
        lambda d: d.update(
            database="/file/clients.db",
            hosts_file="/file/hosts",
            wireguard_dir="/file/wireguard",
            listen={"host": "127.0.0.1", "port": 9000},
        )
    )
    path = write(tmp_path / "config.yaml", data)
    overrides = {
        "host": "::1",
        "port": 8080,
        "database": "/cli/clients.db",
        "hosts_file": "/cli/hosts",
        "wireguard_dir": "/cli/wireguard",
    }
    config = load_config(path, overrides)
    assert (config.listen.host, config.listen.port) == ("::1", 8080)
    assert config.database == "/cli/clients.db"
    assert config.hosts_file == Path("/cli/hosts")
    assert config.wireguard_dir == Path("/cli/wireguard")


def test_partial_listen_override_keeps_file_value(tmp_path: Path) -> None:
    path = write(
        tmp_path / "config.yaml",
        settings(lambda d: d.update(listen={"host": "127.0.0.1", "port": 9000})),
    )
    config = load_config(path, {"port": 8080})
    assert (config.listen.host, config.listen.port) == ("127.0.0.1", 8080)
    assert load_config(path, {}).listen.port == 9000


def test_override_without_listen_in_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "config.yaml", settings()), {"host": "0.0.0.0"})
    assert (config.listen.host, config.listen.port) == ("0.0.0.0", DEFAULT_PORT)


def test_example_config_is_valid() -> None:
    config = load_config(EXAMPLE)
    assert config.domain == "icpcnet.internal"
    assert config.prune_timeout == timedelta(minutes=30)
    assert set(config.fleets) == {"southeast", "northwest"}
    assert config.fleets["southeast"].endpoint == "1.2.3.4:51820"
    assert config.fleets["northwest"].interface_address == "fd00:a0a8:34d:2000::1/64"
