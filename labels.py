"""Client labels: the key=value pairs a client declares about itself in its pings.

A label set is a plain `dict[str, str]`, treated as immutable once validated. The
rules keep every label usable as a Prometheus label, an Ansible group name part and a
name-template placeholder, without colliding with the labels wg-fleet sets itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MAX_LABELS = 16
MAX_VALUE = 128
KEY = re.compile(r"[a-z][a-z0-9_]{0,31}")
RESERVED = frozenset({"fleet", "hostname", "node", "address", "job", "instance"})
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

Labels = dict[str, str]


class InvalidLabel(ValueError):
    """A label that breaks the rules; `str()` is a sentence naming it."""


def check_key(key: str) -> str:
    """`key` when it may name a label; `InvalidLabel` saying why not otherwise."""
    if not KEY.fullmatch(key):
        raise InvalidLabel(
            f"label {key!r}: keys are 1 to 32 characters from a-z, 0-9 and _, "
            "starting with a letter"
        )
    if key in RESERVED or key.startswith("__"):
        raise InvalidLabel(
            f"label {key!r} is reserved (fleet, hostname, node, address, job, instance "
            "and keys starting with __ are set by wg-fleet or Prometheus)"
        )
    return key


def check_value(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidLabel(f"label {key!r}: the value must be a string")
    if len(value) > MAX_VALUE:
        raise InvalidLabel(f"label {key!r}: the value is longer than {MAX_VALUE} characters")
    if CONTROL.search(value):
        raise InvalidLabel(f"label {key!r}: the value must not hold control characters")
    return value


def check_labels(labels: Mapping[str, Any]) -> Labels:
    """A validated copy of `labels`; raises `InvalidLabel` naming the first bad label."""
    if len(labels) > MAX_LABELS:
        raise InvalidLabel(f"at most {MAX_LABELS} labels are allowed, not {len(labels)}")
    return {check_key(key): check_value(key, value) for key, value in labels.items()}


def parse_selector(text: str) -> tuple[str, str]:
    """`key:value` (as in `?label=site:ucf`) as a pair; the value may hold colons."""
    key, colon, value = text.partition(":")
    if not colon:
        raise InvalidLabel(f"label filter {text!r} must be written key:value")
    return check_key(key), check_value(key, value)


def stored(labels: Mapping[str, str] | None) -> Labels:
    """What a row's `labels` column holds, as a label set (NULL is no labels)."""
    return dict(labels) if labels else {}


def label_text(labels: Mapping[str, str]) -> str:
    """`site=ucf, team=42`, for pages."""
    return ", ".join(f"{key}={value}" for key, value in sorted(labels.items()))
