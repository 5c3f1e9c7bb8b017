"""Name templates: which names each client publishes in the hosts file.

A template such as `{hostname}.{label.site}.{domain}` is expanded per client; a result
that is not a valid name, or that needs a label the client lacks, is skipped for that
client. Names are unique across the whole hosts file: when two clients would publish
the same one, the earlier-registered client keeps it (ties broken by row id), so the
outcome depends only on the database and is the same after a restart.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from labels import InvalidLabel, check_key

DEFAULT_NAMES = ("{hostname}.{fleet}.{domain}",)
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
LITERAL = re.compile(r"[a-z0-9_.-]*")
NAME = re.compile(r"(?:[a-z0-9_-]{1,63}\.)*[a-z0-9_-]{1,63}")
MAX_NAME = 253
FIELDS = ("hostname", "fleet", "domain")


@dataclass(frozen=True)
class Field:
    """{hostname}, {fleet} or {domain}."""

    name: str


@dataclass(frozen=True)
class Label:
    """{label.KEY}: the client's label, lowercased."""

    key: str


@dataclass(frozen=True)
class Template:
    text: str
    parts: tuple[str | Field | Label, ...]

    def expand(
        self, hostname: str, fleet: str, domain: str, labels: Mapping[str, str]
    ) -> str | None:
        """The name this template gives a client, or None when it gives none."""
        pieces: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                pieces.append(part)
            elif isinstance(part, Label):
                value = labels.get(part.key)
                if value is None:
                    return None
                pieces.append(value.lower())
            elif part.name == "hostname":
                pieces.append(hostname)
            else:
                pieces.append(fleet if part.name == "fleet" else domain)
        name = "".join(pieces)
        return name if is_valid_name(name) else None


def is_valid_name(name: str) -> bool:
    """Dot-separated labels of 1-63 characters from a-z 0-9 _ -, at most 253 in all."""
    return len(name) <= MAX_NAME and NAME.fullmatch(name) is not None


def parse_template(text: str) -> Template:
    """Raises ValueError naming the template and what is wrong with it."""
    parts: list[str | Field | Label] = []
    position = 0
    for match in [*PLACEHOLDER.finditer(text), None]:
        literal = text[position : match.start() if match else len(text)]
        if "{" in literal or "}" in literal:
            raise ValueError(f"the name template {text!r} has an unmatched {{ or }}")
        if not LITERAL.fullmatch(literal):
            raise ValueError(
                f"the name template {text!r} holds {literal!r}: outside placeholders, "
                "names may only hold a-z, 0-9, _, - and dots"
            )
        if literal:
            parts.append(literal)
        if match is None:
            break
        position = match.end()
        placeholder = match.group(1)
        if placeholder in FIELDS:
            parts.append(Field(placeholder))
        elif placeholder.startswith("label."):
            try:
                parts.append(Label(check_key(placeholder.removeprefix("label."))))
            except InvalidLabel as error:
                raise ValueError(f"the name template {text!r}: {error}") from None
        else:
            raise ValueError(
                f"the name template {text!r} has the unknown placeholder {{{placeholder}}}; "
                "use {hostname}, {fleet}, {domain} or {label.KEY}"
            )
    return Template(text, tuple(parts))


def check_templates(templates: Sequence[str]) -> tuple[str, ...]:
    """For the config: the templates, each parsed once to find mistakes."""
    if not templates:
        raise ValueError("must hold at least one name template")
    for text in templates:
        parse_template(text)
    return tuple(templates)


class Entry(NamedTuple):
    """One client as publishing sees it; callers list entries in registration order."""

    fleet: str
    address: str
    hostname: str | None
    labels: Mapping[str, str] | None = None
    registered_at: datetime | None = None


@dataclass(frozen=True)
class Naming:
    """Each entry's published names (in template order) and the names it lost."""

    names: dict[tuple[str, str], tuple[str, ...]]  # (fleet, address) -> names
    collisions: list[str]  # one sentence per name left out


def assign_names(
    entries: Iterable[Entry], rules: Mapping[str, Sequence[Template]], domain: str
) -> Naming:
    """Expand every named entry's templates; the first entry to claim a name keeps it.

    `rules` holds each fleet's templates; fleets without rules use `DEFAULT_NAMES`.
    """
    default = tuple(parse_template(text) for text in DEFAULT_NAMES)
    owner: dict[str, tuple[str, str]] = {}
    names: dict[tuple[str, str], tuple[str, ...]] = {}
    collisions: list[str] = []
    for entry in entries:
        if not entry.hostname:
            continue
        labels = entry.labels or {}
        mine: list[str] = []
        for template in rules.get(entry.fleet, default):
            name = template.expand(entry.hostname, entry.fleet, domain, labels)
            if name is None or name in mine:
                continue
            holder = owner.setdefault(name, (entry.fleet, entry.address))
            if holder != (entry.fleet, entry.address):
                collisions.append(
                    f"{name} is left out for {entry.address} (fleet {entry.fleet}): "
                    f"{holder[1]} (fleet {holder[0]}) registered earlier and keeps it"
                )
                continue
            mine.append(name)
        if mine:
            names[(entry.fleet, entry.address)] = tuple(mine)
    return Naming(names, collisions)


def compile_rules(templates: Mapping[str, Sequence[str]]) -> dict[str, tuple[Template, ...]]:
    """Each fleet's templates, parsed (the config has validated them)."""
    return {
        fleet: tuple(parse_template(text) for text in texts) for fleet, texts in templates.items()
    }
