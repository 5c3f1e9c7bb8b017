"""hostnames.py: the pure naming rules of a ping (SPEC §4 "POST /fleet/{fleet}/ping")."""

from __future__ import annotations

import random
import re

import pytest

from hostnames import MAX_LENGTH, choose_hostname, numbered, search_prefix

VALID = re.compile(r"[a-z0-9_-]{1,63}")


def choose(
    requested: str,
    *,
    current: str | None = None,
    current_request: str | None = None,
    taken: set[str] | None = None,
    separator: str = "",
) -> str:
    return choose_hostname(
        requested,
        current=current,
        current_request=current_request,
        taken=taken or set(),
        separator=separator,
    )


# --- rule 1: the requested name itself ---------------------------------------------------


def test_free_name_is_granted() -> None:
    assert choose("excavator", taken={"digger", "excavator2"}) == "excavator"


def test_free_name_replaces_an_unrelated_current_name() -> None:
    assert choose("excavator", current="digger", current_request="digger") == "excavator"


def test_promotion_back_once_the_holder_is_gone() -> None:
    # The client got excavator2 while another client held excavator; that one was pruned.
    assert (
        choose("excavator", current="excavator2", current_request="excavator", taken=set())
        == "excavator"
    )


def test_client_keeps_its_own_plain_name() -> None:
    # `taken` never holds the client's own row, so its own name is free to it.
    assert (
        choose("excavator", current="excavator", current_request="excavator", taken={"digger"})
        == "excavator"
    )


# --- rule 2: no renumbering, no flapping -------------------------------------------------


def test_numbered_name_is_kept_for_the_same_request_even_with_a_lower_gap() -> None:
    taken = {"excavator", "excavator4"}  # excavator2 is free, but the client holds 3
    assert (
        choose("excavator", current="excavator3", current_request="excavator", taken=taken)
        == "excavator3"
    )


def test_numbered_name_is_given_up_when_someone_else_holds_it() -> None:
    # Only possible through races or a literal request; the client must not share a name.
    taken = {"excavator", "excavator3"}
    assert (
        choose("excavator", current="excavator3", current_request="excavator", taken=taken)
        == "excavator2"
    )


def test_different_request_by_the_same_client_gets_a_fresh_name() -> None:
    taken = {"digger", "digger2", "excavator"}
    assert (
        choose("digger", current="excavator3", current_request="excavator", taken=taken)
        == "digger3"
    )


def test_current_name_without_recorded_request_is_not_kept() -> None:
    taken = {"excavator"}
    assert (
        choose("excavator", current="excavator5", current_request=None, taken=taken) == "excavator2"
    )


# --- rule 3: lowest free number ----------------------------------------------------------


@pytest.mark.parametrize(
    ("taken", "expected"),
    [
        ({"excavator"}, "excavator2"),
        ({"excavator", "excavator2"}, "excavator3"),
        ({"excavator", "excavator3", "excavator4"}, "excavator2"),
        ({"excavator", "excavator2", "excavator4"}, "excavator3"),
        ({"excavator", *(f"excavator{n}" for n in range(2, 10))}, "excavator10"),
    ],
)
def test_lowest_free_number_fills_gaps(taken: set[str], expected: str) -> None:
    assert choose("excavator", taken=taken) == expected


@pytest.mark.parametrize(
    ("taken", "expected"),
    [
        ({"excavator"}, "excavator--2"),
        ({"excavator", "excavator--2"}, "excavator--3"),
        # A name without the separator is someone else's literal request, not a number.
        ({"excavator", "excavator2"}, "excavator--2"),
    ],
)
def test_separator(taken: set[str], expected: str) -> None:
    assert choose("excavator", taken=taken, separator="--") == expected


# --- length limit ------------------------------------------------------------------------

BASE_63 = "abcdefghij" * 6 + "xyz"  # 63 characters


@pytest.mark.parametrize(
    ("base", "separator", "number", "expected"),
    [
        ("excavator", "", 2, "excavator2"),
        ("excavator", "--", 12, "excavator--12"),
        (BASE_63, "", 2, BASE_63[:62] + "2"),
        (BASE_63, "", 10, BASE_63[:61] + "10"),
        (BASE_63, "", 100, BASE_63[:60] + "100"),
        (BASE_63, "--", 2, BASE_63[:60] + "--2"),
        (BASE_63, "--", 10, BASE_63[:59] + "--10"),
        (BASE_63, "_-_", 7, BASE_63[:59] + "_-_7"),
        (BASE_63[:62], "", 2, BASE_63[:62] + "2"),  # 62 + 1 fits untouched
        (BASE_63[:62], "", 10, BASE_63[:61] + "10"),
    ],
)
def test_numbered_fits_63_characters(base: str, separator: str, number: int, expected: str) -> None:
    result = numbered(base, separator, number)
    assert result == expected
    assert len(result) <= MAX_LENGTH


def test_long_requested_name_is_shortened_to_fit() -> None:
    assert len(BASE_63) == MAX_LENGTH
    assert choose(BASE_63) == BASE_63
    second = choose(BASE_63, taken={BASE_63})
    assert second == BASE_63[:62] + "2"
    tenth = choose(BASE_63, taken={BASE_63, *(numbered(BASE_63, "", n) for n in range(2, 10))})
    assert tenth == BASE_63[:61] + "10"
    assert len(second) == len(tenth) == MAX_LENGTH


# --- search_prefix -----------------------------------------------------------------------


@pytest.mark.parametrize("requested", ["a", "excavator", BASE_63[:50], BASE_63[:56], BASE_63])
@pytest.mark.parametrize("separator", ["", "-", "--", "_-_"])
def test_search_prefix_prefixes_every_numbered_form(requested: str, separator: str) -> None:
    prefix = search_prefix(requested, separator)
    assert prefix
    assert requested.startswith(prefix)
    for number in (2, 9, 10, 99, 100, 12345, 9_999_999):
        assert numbered(requested, separator, number).startswith(prefix), number


def test_search_prefix_is_the_whole_short_name() -> None:
    assert search_prefix("excavator", "--") == "excavator"


# --- many clients, one name --------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "separator", "seed"),
    [("excavator", "", 1), ("excavator", "--", 2), (BASE_63, "", 3), (BASE_63, "_-_", 4)],
)
def test_many_clients_requesting_the_same_name(requested: str, separator: str, seed: int) -> None:
    rng = random.Random(seed)
    clients = list(range(200))
    names: dict[int, str] = {}
    requests: dict[int, str] = {}

    def ping(client: int) -> None:
        taken = {name for other, name in names.items() if other != client}
        names[client] = choose_hostname(
            requested,
            current=names.get(client),
            current_request=requests.get(client),
            taken=taken,
            separator=separator,
        )
        requests[client] = requested

    rng.shuffle(clients)
    for client in clients:
        ping(client)
    assigned = list(names.values())
    assert len(set(assigned)) == len(assigned) == 200
    assert all(len(name) <= MAX_LENGTH and VALID.fullmatch(name) for name in assigned)
    # Lowest free numbers: exactly the plain name and numbers 2..200.
    expected = {requested} | {numbered(requested, separator, n) for n in range(2, 201)}
    assert set(assigned) == expected

    # Pinging again, in another order, renames nobody.
    before = dict(names)
    rng.shuffle(clients)
    for client in clients:
        ping(client)
    assert names == before

    # The holder of the plain name leaves: whoever pings first is promoted, nobody else moves.
    holder = next(client for client, name in names.items() if name == requested)
    del names[holder]
    survivors = [client for client in clients if client != holder]
    first = survivors[0]
    ping(first)
    assert names[first] == requested
    for client in survivors[1:]:
        ping(client)
        assert names[client] == before[client]
