"""How a family of threads is judged for removal: holds above and below, newest activity.

These rules decide what retention and erasure may delete, so they are checked on a
deep chain with a side branch, where a per-thread walk and the one-pass answers could
disagree.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from chatledger.admin.catalog import Forest

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _chain(depth: int, held: set[str]) -> Forest:
    forest = Forest()
    for i in range(depth):
        doc: dict[str, object] = {"_id": f"t{i}", "root_id": "t0"}
        if i:
            doc["parent"] = {"thread_id": f"t{i - 1}", "offset": i}
        if f"t{i}" in held:
            doc["legal_holds"] = [{"case": "c"}]
        forest.add(doc)
    forest.add({"_id": "side", "root_id": "t0", "parent": {"thread_id": "t3", "offset": 3}})
    return forest


def _walked(forest: Forest, tid: str) -> str | None:
    # The definition, walked per thread: a hold on an ancestor, the thread or a branch.
    for other in (*forest.ancestors(tid), *forest.descendants(tid)):
        if forest.held(other):
            return other
    return None


def test_holds_block_their_ancestors_and_branches_only() -> None:
    forest = _chain(300, held={"t150"})
    for tid in forest.docs:
        assert forest.hold_blocks(tid) == _walked(forest, tid), tid
    assert forest.hold_blocks("t0") == "t150"  # an ancestor of a held thread is kept
    assert forest.hold_blocks("t151") == "t150"  # so is every branch below it
    assert forest.hold_blocks("side") is None  # a side branch forked above the hold goes


def test_a_hold_added_later_is_seen() -> None:
    forest = _chain(10, held=set())
    assert forest.hold_blocks("t5") is None
    forest.add(
        {"_id": "late", "root_id": "t0", "parent": {"thread_id": "t7"}, "legal_holds": [{"case": "x"}]}
    )
    assert forest.hold_blocks("t5") == "late"


def test_newest_activity_covers_every_branch() -> None:
    forest = _chain(50, held=set())
    last = dict.fromkeys(forest.docs, T0)
    last["side"] = T0 + timedelta(days=3)
    last["t40"] = T0 + timedelta(days=1)
    newest = forest.newest(last)
    assert newest["t0"] == newest["t3"] == T0 + timedelta(days=3)  # the side branch is newest
    assert newest["t4"] == T0 + timedelta(days=1)  # not in t4's subtree
    assert newest["t41"] == T0
    assert newest["side"] == T0 + timedelta(days=3)
