"""Keyset pagination over a fleet's clients: search, sort, and opaque cursors.

No OFFSET: each page continues from the sort key of the last row shown, so the
thousandth page costs what the first does. A sort is a list of *segments*, each an
index-ordered slice of the fleet (sorting by hostname shows named clients by name, then
unnamed ones by age); a cursor names the segment and the key it stopped at.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, literal, select, tuple_, union_all
from sqlalchemy.orm import InstrumentedAttribute, Session

from database import Client

Sort = Literal["hostname", "activity", "address"]
SORTS: tuple[Sort, ...] = ("hostname", "activity", "address")


MAX_CURSOR = 400  # characters; the longest cursor `encode` makes is about 200
MAX_ID = 1 << 63  # ids are BIGINT on PostgreSQL


class InvalidCursor(ValueError):
    pass


class InvalidSearch(ValueError):
    pass


def check_text(value: str) -> None:
    """`ValueError` for text no database column can hold: NUL (PostgreSQL refuses it)
    or unpaired surrogates (not encodable as UTF-8)."""
    if "\x00" in value:
        raise ValueError("NUL")
    value.encode("utf-8")  # UnicodeEncodeError is a ValueError


def check_search(q: str) -> str:
    """`q` when it can be searched for; `InvalidSearch` with a sentence otherwise."""
    try:
        check_text(q)
    except ValueError:
        raise InvalidSearch(
            "The search text must not hold NUL or unpaired surrogate characters."
        ) from None
    return q


@dataclass(frozen=True)
class Segment:
    where: ColumnElement[bool]
    keys: tuple[InstrumentedAttribute[Any], ...]
    descending: bool = False


def segments(sort: Sort) -> list[Segment]:
    if sort == "hostname":
        return [
            Segment(Client.hostname.is_not(None), (Client.hostname, Client.id)),
            Segment(Client.hostname.is_(None), (Client.id,)),
        ]
    if sort == "activity":
        return [Segment(Client.id.is_not(None), (Client.last_active, Client.id), descending=True)]
    return [Segment(Client.id.is_not(None), (Client.address, Client.id))]


@dataclass(frozen=True)
class Cursor:
    sort: Sort
    segment: int
    key: tuple[Any, ...]
    backwards: bool = False

    def encode(self) -> str:
        values = [v.isoformat() if isinstance(v, datetime) else v for v in self.key]
        payload = json.dumps([self.sort, self.segment, values, self.backwards]).encode()
        return base64.urlsafe_b64encode(payload).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str, sort: Sort) -> Cursor:
        """Raises `InvalidCursor` for anything `encode` did not make for `sort`."""
        if len(text) > MAX_CURSOR:
            raise InvalidCursor("The cursor is not one this server handed out (too long).")
        try:
            payload = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
            cursor_sort, segment, values, backwards = payload
        except (ValueError, TypeError, binascii.Error, RecursionError):
            raise InvalidCursor("The cursor is not one this server handed out.") from None
        if cursor_sort != sort and cursor_sort in SORTS:
            raise InvalidCursor("The cursor belongs to another sort order; start again.")
        shapes = segments(sort)
        if (
            cursor_sort != sort
            or type(segment) is not int
            or not 0 <= segment < len(shapes)
            or type(backwards) is not bool
            or not isinstance(values, list)
            or len(values) != len(shapes[segment].keys)
        ):
            raise InvalidCursor("The cursor is not one this server handed out.")
        try:
            key = tuple(
                _key_value(column, value)
                for value, column in zip(values, shapes[segment].keys, strict=True)
            )
        except (ValueError, TypeError, OverflowError):
            raise InvalidCursor("The cursor is not one this server handed out.") from None
        return cls(sort, segment, key, backwards)


def _key_value(column: InstrumentedAttribute[Any], value: Any) -> Any:
    """A cursor's JSON value as the column's Python type; TypeError/ValueError if it is not."""
    if column is Client.id:
        if type(value) is not int or not 0 < value < MAX_ID:
            raise TypeError("id")
        return value
    if not isinstance(value, str):
        raise TypeError(column.key)
    check_text(value)
    if column is Client.last_active:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            raise ValueError("naive time")
        return moment.astimezone(UTC)
    return value


@dataclass(frozen=True)
class Page:
    rows: list[Client]
    next_cursor: str | None
    previous_cursor: str | None


def prefix_range(column: InstrumentedAttribute[Any], prefix: str) -> ColumnElement[bool]:
    """`column` starts with `prefix`, as a range an index can serve (portable, no LIKE)."""
    return and_(column >= prefix, column < prefix + "\U0010ffff")


def search_filter(fleet: str, q: str) -> ColumnElement[bool]:
    """Hostname, address or public-key prefix, as `id IN (three index range scans)`.

    An OR of the three ranges would be tested row by row along the sort's index, reading
    every row of the fleet when little matches; here each range is a slice of its own
    index. Keys are unique across fleets, so the key's index needs no fleet.
    """
    low = q.lower()
    return Client.id.in_(
        union_all(
            select(Client.id).where(Client.fleet == fleet, prefix_range(Client.hostname, low)),
            select(Client.id).where(Client.fleet == fleet, prefix_range(Client.address, low)),
            select(Client.id).where(prefix_range(Client.public_key, q)),
        )
    )


def label_filter(labels: Sequence[tuple[str, str]]) -> ColumnElement[bool]:
    """Every (key, value) pair is among the client's labels (keys are validated, so
    they are safe in a JSON path)."""
    return and_(*(Client.labels[key].as_string() == value for key, value in labels))


def _beyond(segment: Segment, key: Sequence[Any], backwards: bool) -> ColumnElement[bool]:
    columns = tuple_(*segment.keys)
    # Bound with the columns' types, so a time goes through UTCDateTime like stored ones.
    values = tuple_(*(literal(v, c.type) for c, v in zip(segment.keys, key, strict=True)))
    after = columns < values if segment.descending else columns > values
    before = columns > values if segment.descending else columns < values
    return before if backwards else after


def _ordered(segment: Segment, backwards: bool) -> list[Any]:
    reverse = segment.descending != backwards
    return [key.desc() if reverse else key.asc() for key in segment.keys]


def _key_of(row: Client, segment: Segment) -> tuple[Any, ...]:
    return tuple(getattr(row, column.key) for column in segment.keys)


def select_page(
    session: Session,
    fleet: str,
    *,
    sort: Sort = "hostname",
    q: str = "",
    limit: int = 100,
    cursor: Cursor | None = None,
    labels: Sequence[tuple[str, str]] = (),
) -> Page:
    """One page of the fleet's clients in `sort` order, continuing from `cursor`; with
    `labels`, only those that carry every one of them."""
    shapes = segments(sort)
    backwards = cursor.backwards if cursor else False
    start = cursor.segment if cursor else (len(shapes) - 1 if backwards else 0)
    order = range(start, -1, -1) if backwards else range(start, len(shapes))
    found: list[tuple[int, Client]] = []
    for index in order:
        shape = shapes[index]
        query = select(Client).where(Client.fleet == fleet, shape.where)
        if q:
            query = query.where(search_filter(fleet, q))
        if labels:
            query = query.where(label_filter(labels))
        if cursor is not None and index == cursor.segment:
            query = query.where(_beyond(shape, cursor.key, backwards))
        query = query.order_by(*_ordered(shape, backwards)).limit(limit + 1 - len(found))
        found += [(index, row) for row in session.scalars(query)]
        if len(found) > limit:
            break
    more = len(found) > limit
    found = found[:limit]
    if backwards:
        found.reverse()
    rows = [row for _, row in found]
    if not found:
        return Page([], None, None)

    def cursor_at(position: int, towards_start: bool) -> str:
        index, row = found[position]
        return Cursor(sort, index, _key_of(row, shapes[index]), towards_start).encode()

    has_next = more if not backwards else True
    has_previous = more if backwards else cursor is not None
    return Page(
        rows,
        cursor_at(-1, False) if has_next else None,
        cursor_at(0, True) if has_previous else None,
    )
