"""Whatever a config holds, the wg-quick files rendered from it carry exactly the keys
wg-fleet writes: no value can smuggle a line (`PreUp = …`, run by root) into the
server's own config or into a client's.

The files are read back with a parser written here for the purpose (sections and
`Key = value` lines, as wg-quick reads them), sharing no code with the renderers.
"""

from __future__ import annotations

from ipaddress import IPv6Address
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config import ConfigError, parse_config
from wireguard import generate_keypair, render_client_config, render_server_config

KEY = generate_keypair()
CLIENT_ADDRESS = IPv6Address("fd00:1::1234")

# Text meant to break out of a value: line breaks, section headers, scope IDs.
NASTY = st.sampled_from(
    [
        "\n",
        "\r",
        "\r\n",
        "\x0b",
        "\x0c",
        "\x1c",
        "\x85",
        "\u2028",
        "%",
        "[Peer]",
        "PreUp = id",
        " ",
        "=",
        "#",
        "/",
        ",",
        "]",
        "[",
    ]
)
TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)


def hostile(valid: list[str]) -> st.SearchStrategy[str]:
    """Half the time a valid value, else one with something appended or prepended (a
    scope ID, a line break…), or arbitrary text."""
    tails = st.lists(st.one_of(NASTY, TEXT), max_size=4).map("".join)
    return st.one_of(
        st.sampled_from(valid),
        st.one_of(
            st.builds(lambda v, t: v + t, st.sampled_from(valid), tails),
            # A scope ID, which Python's ipaddress accepts whatever it holds.
            st.builds(lambda v, t: f"{v}%{t}", st.sampled_from(valid), tails),
            st.builds(lambda t, v: t + v, tails, st.sampled_from(valid)),
            TEXT,
        ),
    )


ADDRESSES = ["fd00:1::1", "fe80::1", "10.0.0.1", "::1", "192.0.2.7"]
NETWORKS = ["fd00:1::/64", "fd00:1::1/128", "10.0.0.0/8", "0.0.0.0/0", "::/0"]
NAMES = ["vpn.example.org", "example", "a-b.c"]


def parse_wg_quick(text: str) -> list[tuple[str, dict[str, str]]]:
    """Sections in order, each with its keys; fails on a line that is neither."""
    sections: list[tuple[str, dict[str, str]]] = []
    # wg-quick reads lines as bash does: only \n ends a line; \r would stay in a value.
    for line in text.split("\n"):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            sections.append((stripped[1:-1], {}))
            continue
        key, equals, value = stripped.partition("=")
        assert equals, f"a line that is not a setting: {line!r}"
        assert sections, f"a setting before any section: {line!r}"
        settings_ = sections[-1][1]
        assert key.strip() not in settings_, f"{key.strip()} twice"
        settings_[key.strip()] = value.strip()
    return sections


def assert_plain(sections: list[tuple[str, dict[str, str]]]) -> None:
    """No value holds a character wg-quick or bash would treat specially."""
    for _, values in sections:
        for key, value in values.items():
            assert value.isprintable(), (key, value)
            assert value.isascii(), (key, value)
            assert "%" not in value, (key, value)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ip6=hostile(["fd00:1::1", "fd00:1::2"]),
    subnet=hostile(["fd00:1::/64", "fd00:1::/112"]),
    external_ip=hostile([*ADDRESSES, *NAMES, "[fd00::1]"]),
    allowed_ips=st.lists(hostile(NETWORKS), max_size=3),
    register_from=st.lists(hostile(NETWORKS), max_size=2),
    trusted_proxies=st.lists(hostile(NETWORKS), max_size=2),
    keepalive=st.integers(0, 30),
)
def test_rendered_configs_hold_exactly_the_expected_keys(
    ip6: str,
    subnet: str,
    external_ip: str,
    allowed_ips: list[str],
    register_from: list[str],
    trusted_proxies: list[str],
    keepalive: int,
) -> None:
    fleet: dict[str, Any] = {
        "ip6": ip6,
        "subnet": subnet,
        "external_ip": external_ip,
        "port": 51820,
        "persistent_keepalive": keepalive,
        "register_from": register_from,
    }
    if allowed_ips:
        fleet["allowed_ips"] = allowed_ips
    data = {
        "domain": "fleet.test",
        "prune_timeout": "30m",
        "trusted_proxies": trusted_proxies,
        "fleets": {"alpha": fleet},
    }
    try:
        config = parse_config(data, "test.yaml")
    except ConfigError as error:
        refusal = str(error)
    else:
        refusal = ""
    if refusal:
        assert "\n" not in refusal  # still one sentence on one line
        return
    settings_ = config.fleets["alpha"]

    server = parse_wg_quick(render_server_config(KEY.private_key, settings_))
    assert [name for name, _ in server] == ["Interface"]
    assert set(server[0][1]) == {"PrivateKey", "Address", "ListenPort"}
    assert server[0][1]["Address"] == f"{settings_.ip6}/{settings_.subnet.prefixlen}"
    assert_plain(server)

    for private_key in (KEY.private_key, None):
        client = parse_wg_quick(
            render_client_config(
                private_key=private_key,
                address=CLIENT_ADDRESS,
                server_public_key=KEY.public_key,
                fleet=settings_,
            )
        )
        assert [name for name, _ in client] == ["Interface", "Peer"]
        interface, peer = client[0][1], client[1][1]
        assert set(interface) == ({"PrivateKey"} if private_key else set()) | {"Address"}
        expected_peer = {"PublicKey", "Endpoint", "AllowedIPs"}
        assert set(peer) == expected_peer | ({"PersistentKeepalive"} if keepalive else set())
        assert peer["AllowedIPs"] == ", ".join(str(n) for n in settings_.allowed_ips)
        assert peer["Endpoint"].rpartition(":")[2] == "51820"
        assert_plain(client)
