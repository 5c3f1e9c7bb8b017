"""roster.py: the clients kept in memory, and kept out of the garbage collector's walks."""

from __future__ import annotations

import gc

from roster import Changes, Member, Roster, entries_of


def keys(count: int) -> list[str]:
    return [f"roster-test-key-{number:05d}=" for number in range(count)]


def test_find_add_rename_remove() -> None:
    roster = Roster()
    assert roster.size("alpha") is None
    roster.load("alpha", [("k1", "fd00::2", "excavator", "excavator", {"room": "a"})])
    assert roster.find("alpha", "fd00::2") == Member("k1", "excavator", "excavator", {"room": "a"})
    roster.add("alpha", "k2", "fd00::3")
    assert roster.find("alpha", "fd00::3") == Member("k2", None, None)
    assert roster.holds("alpha", "fd00::3")
    assert not roster.holds("alpha", "fd00::4")
    roster.rename("alpha", "fd00::3", "digger", "digger", {"room": "b"})
    assert roster.find("alpha", "fd00::3") == Member("k2", "digger", "digger", {"room": "b"})
    roster.add("alpha", "k2", "fd00::3")  # the same key again keeps its name
    assert roster.find("alpha", "fd00::3") == Member("k2", "digger", "digger", {"room": "b"})
    roster.remove("alpha", ["fd00::2"])
    assert roster.find("alpha", "fd00::2") is None
    assert roster.size("alpha") == 1


def test_entries_are_not_walked_by_the_collector() -> None:
    """Tens of thousands of clients must not lengthen every full collection: after one
    collection or two none of their entries is tracked any more (a Member would be)."""
    roster = Roster()
    loaded, added = keys(2000)[:1000], keys(2000)[1000:]
    roster.load("alpha", [(key, f"fd00::{n:x}", None, None) for n, key in enumerate(loaded)])
    for n, key in enumerate(added):
        roster.add("alpha", key, f"fd00::1:{n:x}")
        roster.rename("alpha", f"fd00::1:{n:x}", f"host{n}", f"host{n}", {"room": "a"})
    # A tuple is untracked once what it holds is: one level of nesting per collection.
    for _ in range(3):
        gc.collect()
    wanted = set(loaded + added)
    tracked = [o for o in gc.get_objects() if isinstance(o, tuple) and o and isinstance(o[0], str)]
    assert [entry for entry in tracked if entry[0] in wanted] == []
    assert roster.size("alpha") == 2000


def test_install_replays_what_happened_since_watch() -> None:
    """Rows read when `watch` was called, installed later: the registrations, renames
    and removals made in between are kept, and their keys reported."""
    roster = Roster()
    roster.load("alpha", [("k1", "fd00::1", None, None), ("k2", "fd00::2", None, None)])
    roster.watch("alpha")
    read = entries_of([("k1", "fd00::1", None, None), ("k2", "fd00::2", None, None)])
    roster.add("alpha", "k3", "fd00::3")  # registered meanwhile
    roster.rename("alpha", "fd00::1", "excavator", "excavator")
    roster.remove("alpha", ["fd00::2"])  # left meanwhile
    changes = roster.install("alpha", read)
    assert changes == Changes(added=frozenset({"k3"}), removed=frozenset({"k2"}))
    assert roster.find("alpha", "fd00::3") == Member("k3", None, None)
    assert roster.find("alpha", "fd00::1") == Member("k1", "excavator", "excavator")
    assert roster.find("alpha", "fd00::2") is None
    # The journal ended with the install: later changes are not kept for anyone.
    roster.add("alpha", "k4", "fd00::4")
    assert roster.install("alpha", entries_of([])) == Changes(frozenset(), frozenset())
    assert roster.size("alpha") == 0


def test_unwatch_drops_the_journal() -> None:
    roster = Roster()
    roster.load("alpha", [])
    roster.watch("alpha")
    roster.add("alpha", "k1", "fd00::1")
    roster.unwatch("alpha")
    assert roster.install("alpha", entries_of([])) == Changes(frozenset(), frozenset())
