"""Pure hostname assignment: unique names per fleet, numbered on collision, no flapping."""

from __future__ import annotations

import re
from collections.abc import Collection

HOSTNAME = re.compile(r"[a-z0-9_-]{1,63}")
MAX_LENGTH = 63
# Numbers up to this many digits are considered when looking for taken names.
MAX_SUFFIX_DIGITS = 7


def numbered(base: str, separator: str, number: int) -> str:
    """`base` + separator + number, the base shortened so the result fits 63 characters."""
    suffix = f"{separator}{number}"
    return base[: MAX_LENGTH - len(suffix)] + suffix


def search_prefix(requested: str, separator: str) -> str:
    """A prefix shared by `requested` and every numbered form of it (for a LIKE query)."""
    return requested[: MAX_LENGTH - len(separator) - MAX_SUFFIX_DIGITS]


def choose_hostname(
    requested: str,
    *,
    current: str | None,
    current_request: str | None,
    taken: Collection[str],
    separator: str,
) -> str:
    """The name a client gets when it asks for `requested`.

    `taken` holds the names of the fleet's *other* clients. In order: the requested name
    when free (which also promotes `excavator2` back to `excavator` once the holder is
    gone); else the numbered name the client already holds for this same request; else
    the lowest free `<name><separator><n>` with n ≥ 2.
    """
    if requested not in taken:
        return requested
    if current is not None and current_request == requested and current not in taken:
        return current
    number = 2
    while numbered(requested, separator, number) in taken:
        number += 1
    return numbered(requested, separator, number)
