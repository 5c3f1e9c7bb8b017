"""Load and validate the YAML configuration into an immutable `Config` value.

Everything past this module sees addresses as `ipaddress` objects and durations as
`timedelta`. Any problem becomes one `ConfigError` naming the file, the field path and
what is wrong, so that `main.py` can print a single sentence and exit with status 2.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from literals import IPNetwork, parse_address, parse_network
from names import DEFAULT_NAMES, check_templates

DEFAULT_DATABASE = "/var/lib/wg-fleet/clients.db"
DEFAULT_HOSTS_FILE = Path("/run/wg_fleet_hosts")
DEFAULT_WIREGUARD_DIR = Path("/etc/wireguard")
DEFAULT_HOST = "::"
DEFAULT_PORT = 8000
DEFAULT_IPV6_PREFIX = 64

FLEET_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
FLEET_NAME_MAX = 12  # "wg_" + 12 characters fits Linux's 15-character interface names
HOSTNAME_SEPARATOR = re.compile(r"[a-z0-9_-]{0,3}")
NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
DNS_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)", re.IGNORECASE)
DURATION_PART = re.compile(r"(\d+)([dhms])")
DURATION_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


class ConfigError(Exception):
    """The configuration cannot be used; `str()` is one sentence for the operator."""

    def __init__(self, source: str, field: str, problem: str) -> None:
        self.source = source
        self.field = field
        self.problem = problem
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {problem.rstrip('.')}.")


class FieldProblem(ValueError):
    """A cross-field validation failure that names the field it is about."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field


def default_node() -> str:
    """This machine's short host name, the default name of this node."""
    return socket.gethostname().split(".")[0] or "localhost"


def parse_duration(value: object) -> timedelta:
    """Parse `90s`, `30m`, `2h30m`, `1d` or a bare number of seconds into a positive timedelta."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ValueError("must be a duration such as 90s, 30m, 1h or 2h30m")
    elif isinstance(value, int):
        seconds = value
    elif isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            seconds = int(text)
        elif text and DURATION_PART.sub("", text) == "":
            seconds = sum(int(n) * DURATION_UNITS[unit] for n, unit in DURATION_PART.findall(text))
        else:
            raise ValueError(
                f"{value!r} is not a duration; use units d, h, m, s as in 90s, 30m, 1h or 2h30m"
            )
    else:
        raise ValueError("must be a duration such as 90s, 30m, 1h or 2h30m")
    if seconds <= 0:
        raise ValueError("must be a positive duration")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError("is too long a duration") from None


def _is_dns_name(value: str) -> bool:
    name = value.rstrip(".")
    labels = name.split(".")
    return (
        0 < len(name) <= 253
        and all(DNS_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()  # 1.2.3.256 is a mistyped address, not a name
    )


def parse_networks(value: object) -> tuple[IPNetwork, ...]:
    """A YAML list of addresses or CIDRs (a bare address is its /32 or /128), each
    without scope ID or host bits (see `literals.parse_network`)."""
    if not isinstance(value, list | tuple):
        raise ValueError("must be a list of IP addresses or CIDRs")
    try:
        return tuple(parse_network(item) for item in value)
    except ValueError as error:
        raise ValueError(f"contains an invalid network: {error}") from None


def parse_allowed_hosts(value: object) -> tuple[str, ...]:
    """`["*"]`, or names, `*.`-wildcards and address literals for the Host header."""
    if not isinstance(value, list | tuple) or not value:
        raise ValueError('must be a non-empty list of host names or addresses, or ["*"]')
    hosts: list[str] = []
    for item in value:
        text = str(item).strip().lower().rstrip(".")
        if text == "*":
            hosts.append(text)
            continue
        name = text.removeprefix("*.")
        try:
            hosts.append(str(parse_address(name.strip("[]"))))
            continue
        except ValueError:
            pass
        if not _is_dns_name(name):
            raise ValueError(f"{item!r} is not a host name, a *.domain wildcard or an IP address")
        hosts.append(text)
    if "*" in hosts and len(hosts) > 1:
        raise ValueError('"*" admits every host and cannot be combined with others')
    return tuple(hosts)


def parse_moment(value: object) -> datetime:
    """An ISO 8601 time with a zone (quoted, or a YAML timestamp), as aware UTC."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(
                f"{value!r} is not an ISO 8601 time such as 2026-07-01T18:00:00+02:00"
            ) from None
    else:
        raise ValueError("must be an ISO 8601 time with a zone, such as 2026-07-01T18:00:00Z")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(
            f"{moment.isoformat()} has no time zone; add one (Z or +02:00) so that the "
            "moment is unambiguous"
        )
    return moment.astimezone(UTC)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Moment = Annotated[datetime, BeforeValidator(parse_moment)]
Networks = Annotated[tuple[IPNetwork, ...], BeforeValidator(parse_networks)]
# Hosts-file name templates (see names.py); unknown placeholders are errors.
NameTemplates = Annotated[tuple[str, ...], AfterValidator(check_templates)]
AllowedHosts = Annotated[tuple[str, ...], BeforeValidator(parse_allowed_hosts)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ListenConfig(_Frozen):
    host: str = DEFAULT_HOST
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535, strict=True)

    @field_validator("host", mode="before")
    @classmethod
    def _host_is_address_or_name(cls, value: object) -> object:
        try:
            return str(parse_address(str(value).strip("[]")))
        except ValueError as error:
            if "%" in str(value):
                raise
            if isinstance(value, str) and _is_dns_name(value):
                return value.lower().rstrip(".")
            raise ValueError(f"{value!r} is neither an IP address nor a host name") from error


class AdminConfig(_Frozen):
    """HTTP Basic credentials for the dashboard, the JSON API, /metrics and /openapi.json."""

    username: str = Field(min_length=1)
    password_hash: SecretStr

    @field_validator("password_hash")
    @classmethod
    def _is_argon2_hash(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith("$argon2"):
            raise ValueError("must be an argon2 hash printed by `python3 main.py hash-password`")
        return value


class RateLimit(_Frozen):
    """At most `requests` registrations per source within any `per`. A source is an
    IPv4 address, or the IPv6 network of `ipv6_prefix` bits holding the address (one
    host usually holds a whole /64 and may pick any address in it)."""

    requests: int = Field(ge=1, strict=True)
    per: Duration
    ipv6_prefix: int = Field(default=DEFAULT_IPV6_PREFIX, ge=1, le=128, strict=True)


class FleetConfig(_Frozen):
    ip6: ipaddress.IPv6Address
    subnet: ipaddress.IPv6Network
    external_ip: str
    port: int = Field(ge=1, le=65535, strict=True)
    persistent_keepalive: int = Field(default=25, ge=0, le=65535, strict=True)
    allowed_ips: Networks = ()
    # wireguard-go holds at most 65,536 peers on one interface.
    max_clients: int = Field(default=60000, ge=1, le=65536, strict=True)
    registration_token: SecretStr | None = Field(default=None, min_length=16)
    register_from: Networks = ()
    node: str | None = Field(default=None, pattern=NODE_NAME.pattern)
    names: NameTemplates | None = None  # replaces the top-level `names` for this fleet
    prune_timeout: Duration | None = None
    pending_timeout: Duration | None = None
    expires_at: Moment | None = None

    @field_validator("ip6", mode="before")
    @classmethod
    def _ip6_is_ipv6(cls, value: object) -> object:
        address = parse_address(value)
        if address.version != 6:
            raise ValueError(f"{value!r} is not an IPv6 address")
        return address

    @field_validator("subnet", mode="before")
    @classmethod
    def _subnet_is_ipv6_network(cls, value: object) -> object:
        network = parse_network(value)
        if network.version != 6:
            raise ValueError(f"{value} is not an IPv6 subnet")
        return network

    @field_validator("external_ip")
    @classmethod
    def _external_ip_is_address_or_name(cls, value: str) -> str:
        try:
            return str(parse_address(value.strip("[]")))
        except ValueError as error:
            if "%" in value:
                raise
            if not _is_dns_name(value):
                raise ValueError(f"{value!r} is neither an IP address nor a DNS name") from error
        return value.lower().rstrip(".")

    @model_validator(mode="after")
    def _ip6_inside_subnet(self) -> FleetConfig:
        if self.ip6 not in self.subnet:
            raise FieldProblem("ip6", f"{self.ip6} is not inside subnet {self.subnet}")
        if self.ip6 == self.subnet.network_address:
            raise FieldProblem("ip6", f"{self.ip6} is the subnet's zero address; pick another")
        if not self.allowed_ips:
            object.__setattr__(self, "allowed_ips", (ipaddress.IPv6Network(f"{self.ip6}/128"),))
        return self

    @property
    def interface_address(self) -> str:
        """`ip6` with the subnet's prefix length, as the interface carries it."""
        return f"{self.ip6}/{self.subnet.prefixlen}"

    @property
    def endpoint(self) -> str:
        """`host:port` as clients dial it, with an IPv6 literal in brackets."""
        try:
            if ipaddress.ip_address(self.external_ip).version == 6:
                return f"[{self.external_ip}]:{self.port}"
        except ValueError:
            pass
        return f"{self.external_ip}:{self.port}"


EventType = Literal[
    "registered",
    "renamed",
    "online",
    "offline",
    "pruned",
    "left",
    "removed",
    "banned",
    "key_changed",
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)


class WebhookConfig(_Frozen):
    """Where events are POSTed, signed with `secret`; empty filters mean everything."""

    url: str = Field(pattern=r"^https?://[^\s]+$")
    secret: SecretStr = Field(min_length=16)
    events: tuple[str, ...] = ()
    fleets: tuple[str, ...] = ()

    @field_validator("events")
    @classmethod
    def _known_events(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - set(EVENT_TYPES))
        if unknown:
            raise ValueError(
                f"{', '.join(unknown)} is not an event type; use {', '.join(EVENT_TYPES)}"
            )
        return value

    def wants(self, fleet: str, kind: str) -> bool:
        return (not self.events or kind in self.events) and (
            not self.fleets or fleet in self.fleets
        )


class Config(_Frozen):
    domain: str
    prune_timeout: Duration
    prune_interval: Duration = timedelta(minutes=1)
    database: str = DEFAULT_DATABASE
    hosts_file: Path = DEFAULT_HOSTS_FILE
    wireguard_dir: Path = DEFAULT_WIREGUARD_DIR
    listen: ListenConfig = ListenConfig()
    trusted_proxies: Networks = ()
    allowed_hosts: AllowedHosts | None = None
    hostname_separator: str = ""
    fleets: dict[str, FleetConfig] = Field(min_length=1)
    admin: AdminConfig | None = None
    register_rate_limit: RateLimit | None = None
    prometheus_targets_file: Path | None = None
    prometheus_target_port: int = Field(default=9100, ge=1, le=65535, strict=True)
    node: str = Field(default_factory=default_node, pattern=NODE_NAME.pattern)
    names: NameTemplates = DEFAULT_NAMES
    pending_timeout: Duration | None = None
    event_retention: Duration = timedelta(days=7)
    webhooks: tuple[WebhookConfig, ...] = ()
    webhook_give_up: Duration = timedelta(hours=24)

    def prune_timeout_of(self, fleet: str) -> timedelta:
        """The fleet's own `prune_timeout`, else the global one."""
        return self.fleets[fleet].prune_timeout or self.prune_timeout

    def pending_timeout_of(self, fleet: str) -> timedelta:
        """How long a client that never completed a handshake is kept: the fleet's
        `pending_timeout`, else the global one, else the fleet's prune timeout."""
        settings = self.fleets[fleet]
        return settings.pending_timeout or self.pending_timeout or self.prune_timeout_of(fleet)

    def names_of(self, fleet: str) -> tuple[str, ...]:
        """The name templates of `fleet`: its own `names`, else the top-level ones."""
        return self.fleets[fleet].names or self.names

    def node_of(self, fleet: str) -> str:
        """The node that runs `fleet`: its `node`, or this node when it names none."""
        return self.fleets[fleet].node or self.node

    @property
    def local_fleets(self) -> dict[str, FleetConfig]:
        """The fleets this node runs: interfaces, registration, pings and pruning."""
        return {
            name: fleet for name, fleet in self.fleets.items() if self.node_of(name) == self.node
        }

    @field_validator("domain")
    @classmethod
    def _domain_is_dns_name(cls, value: str) -> str:
        if not _is_dns_name(value):
            raise ValueError(f"{value!r} is not a DNS domain name")
        return value.lower().rstrip(".")

    @field_validator("hostname_separator")
    @classmethod
    def _separator_allowed(cls, value: str) -> str:
        if not HOSTNAME_SEPARATOR.fullmatch(value):
            raise ValueError("must be at most 3 characters from a-z, 0-9, _ and -")
        return value

    @field_validator("fleets", mode="before")
    @classmethod
    def _fleet_names_valid(cls, value: object) -> object:
        if isinstance(value, dict):
            for name in value:
                if not isinstance(name, str):
                    raise FieldProblem(
                        str(name), f"fleet name {name!r} must be text; quote it in the YAML file"
                    )
                if not FLEET_NAME.fullmatch(name):
                    raise FieldProblem(
                        str(name),
                        f"fleet name {name!r} must be lowercase letters, digits, _ and -, "
                        "starting with a letter or digit",
                    )
                if len(name) > FLEET_NAME_MAX:
                    raise FieldProblem(
                        name,
                        f"fleet name {name!r} is longer than {FLEET_NAME_MAX} characters "
                        f"(the interface wg_{name} would exceed Linux's 15-character limit)",
                    )
        return value

    @model_validator(mode="after")
    def _pending_not_longer(self) -> Config:
        for name in sorted(self.fleets):
            pending, prune = self.pending_timeout_of(name), self.prune_timeout_of(name)
            if pending > prune:
                own = self.fleets[name].pending_timeout is not None
                raise FieldProblem(
                    f"fleets.{name}.pending_timeout" if own else "pending_timeout",
                    f"{pending} is longer than fleet {name}'s prune_timeout {prune}; "
                    "clients that never connect are pruned sooner, not later",
                )
        urls = [hook.url for hook in self.webhooks]
        for url in urls:
            if urls.count(url) > 1:
                raise FieldProblem("webhooks", f"{url} is listed twice; list each URL once")
        for index, hook in enumerate(self.webhooks):
            unknown = sorted(set(hook.fleets) - set(self.fleets))
            if unknown:
                raise FieldProblem(
                    f"webhooks.{index}.fleets", f"{', '.join(unknown)} is not a configured fleet"
                )
        return self

    @model_validator(mode="after")
    def _fleets_do_not_collide(self) -> Config:
        names = sorted(self.fleets)
        for i, first in enumerate(names):
            for second in names[i + 1 :]:
                a, b = self.fleets[first], self.fleets[second]
                if a.subnet.overlaps(b.subnet):
                    raise FieldProblem(
                        f"fleets.{second}.subnet",
                        f"{b.subnet} overlaps the subnet {a.subnet} of fleet {first}",
                    )
                if a.port == b.port:
                    raise FieldProblem(
                        f"fleets.{second}.port", f"{b.port} is already used by fleet {first}"
                    )
        return self


def _describe(error: ErrorDetails) -> tuple[str, str]:
    """Turn one pydantic error into (field path, problem sentence)."""
    location = [str(part) for part in error["loc"]]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, FieldProblem):
        location.append(cause.field)
    kind = error["type"]
    if kind == "extra_forbidden":
        return ".".join(location), "unknown key (check the spelling)"
    if kind == "missing":
        return ".".join(location), "is required but missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error.get("input") is not None and kind not in {"value_error", "assertion_error"}:
        message = f"{message} (got {error['input']!r})"
    return ".".join(location), message


def parse_config(data: object, source: str = "<config>") -> Config:
    """Validate already-parsed YAML data; raise `ConfigError` on the first problem."""
    if not isinstance(data, dict):
        raise ConfigError(source, "", "the file must contain a mapping of settings")
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        field, problem = _describe(error.errors()[0])
        raise ConfigError(source, field, problem) from None


def load_config(path: Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read and validate the YAML file at `path`, with `overrides` (from the command line)
    replacing top-level keys and `listen.host`/`listen.port`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(str(path), "", f"cannot be read ({error})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "invalid syntax"
        raise ConfigError(str(path), "", f"is not valid YAML{where}: {problem}") from None
    if overrides and isinstance(data, dict):
        data = {**data, **{k: v for k, v in overrides.items() if k not in {"host", "port"}}}
        listen = {k: overrides[k] for k in ("host", "port") if k in overrides}
        if listen:
            current = data.get("listen")
            data["listen"] = {**(current if isinstance(current, dict) else {}), **listen}
    return parse_config(data, str(path))
