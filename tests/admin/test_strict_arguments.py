"""The public admin functions refuse what the CLI refuses, before they touch anything.

A destructive flag must be a real bool ("false" is truthy), an age must be positive and
fit a ``timedelta``, and an anchor must be an anchor: each is ChatLedger's
``InvalidInputError`` (a ``ValueError``), never a raw ``OverflowError`` or
``AttributeError``, and nothing is removed or recorded.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from chatledger import InvalidInputError, Ledger
from chatledger.admin import verify
from chatledger.admin.catalog import count_threads, list_threads
from chatledger.admin.erasure import run_erasure
from chatledger.admin.retention import RetentionPolicy, parse_duration, run_retention
from chatledger.admin.verify import Anchor, head_anchors
from tests.admin.conftest import talk
from tests.admin.test_cli import chatledger
from tests.helpers import raw_docs

LATER = datetime.now(UTC) + timedelta(days=400)


async def unchanged(database: Any) -> tuple[list[Any], list[Any]]:
    return await raw_docs(database["threads"]), await raw_docs(database["audit"])


@pytest.mark.parametrize("flag", ["false", "False", "", 0, 1, None, [True]])
async def test_destructive_flags_must_be_real_bools(database: Any, flag: Any) -> None:
    ledger = Ledger(database)
    await talk(ledger, "t", 1, user_id="alice")
    before = await unchanged(database)
    with pytest.raises(InvalidInputError, match="apply must be True or False"):
        await run_erasure(ledger, user_id="alice", apply=flag)
    with pytest.raises(InvalidInputError, match="apply must be True or False"):
        await run_retention(ledger, RetentionPolicy(default=timedelta(days=1)), apply=flag, now=LATER)
    with pytest.raises(InvalidInputError, match="shred_keys"):
        await run_erasure(ledger, user_id="alice", apply=True, shred_keys=flag)
    assert await unchanged(database) == before


@pytest.mark.parametrize(
    "build",
    [
        lambda: RetentionPolicy(default=timedelta(days=-1)),
        lambda: RetentionPolicy(default=timedelta(0)),
        lambda: RetentionPolicy(tenants={"acme": timedelta(seconds=-5)}),
        lambda: RetentionPolicy(default=30),  # type: ignore[arg-type]
        lambda: RetentionPolicy(tenants={"acme": "30d"}),  # type: ignore[dict-item]
        lambda: RetentionPolicy(tenants={"": timedelta(days=1)}),
        lambda: RetentionPolicy.from_mapping({"default": 10**30}),
        lambda: RetentionPolicy.from_mapping({"default": "99999999999999d"}),
        lambda: RetentionPolicy.from_mapping({"default": -1}),
        lambda: RetentionPolicy.from_mapping({"default": True}),
        lambda: parse_duration("99999999999999d"),
        lambda: parse_duration("9" * 5000),
        lambda: parse_duration(10**30),
        lambda: parse_duration("-3d"),
    ],
)
def test_ages_must_be_positive_and_fit(build: Any) -> None:
    with pytest.raises(InvalidInputError) as raised:
        build()
    assert len(str(raised.value)) < 200  # one readable line, not 5000 digits


async def test_a_policy_that_is_not_a_policy_removes_nothing(database: Any) -> None:
    ledger = Ledger(database)
    await talk(ledger, "t", 1)
    before = await unchanged(database)
    for wrong in ({"default": "1d"}, "1d", None):
        with pytest.raises(InvalidInputError, match="RetentionPolicy"):
            await run_retention(ledger, wrong, apply=True, now=LATER)  # type: ignore[arg-type]
    policy = RetentionPolicy(default=timedelta(days=1))
    with pytest.raises(InvalidInputError, match="now"):
        await run_retention(ledger, policy, apply=True, now="2030")  # type: ignore[arg-type]
    assert await unchanged(database) == before


async def test_anchors_are_checked_before_verifying(database: Any) -> None:
    ledger = Ledger(database)
    await talk(ledger, "t", 2)
    (anchor,) = await head_anchors(ledger)
    # A JSON object works like an Anchor: a wrong hash is a problem of the report, not a crash.
    report = await verify(ledger, anchors=[{"thread_id": "t", "head_seq": 2, "head_hash": "x"}])
    assert not report.ok
    assert "anchored head at seq 2" in report.problems[0].reason
    as_json = {"thread_id": anchor.thread_id, "head_seq": anchor.head_seq, "head_hash": anchor.head_hash}
    assert (await verify(ledger, anchors=[anchor, as_json])).ok
    for bad in (
        [{"thread_id": "t", "head_seq": 2}],
        [{"thread_id": "t", "head_seq": "2", "head_hash": anchor.head_hash}],
        [{"thread_id": {"$ne": None}, "head_seq": 2, "head_hash": anchor.head_hash}],
        [{"thread_id": "t", "head_seq": True, "head_hash": anchor.head_hash}],
        [42],
        "t",
        {"thread_id": "t", "head_seq": 2, "head_hash": "x"},
        7,
    ):
        with pytest.raises(InvalidInputError):
            await verify(ledger, anchors=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        Anchor("t", 0, anchor.head_hash)


async def test_the_command_line_refuses_the_same(real_backend: Any, database: Any, tmp_path: Path) -> None:
    await talk(Ledger(database), "t", 1)

    def run(*args: str) -> Any:
        return chatledger(*args, uri=real_backend.uri, database=database.name, check=2)

    for args in (
        ["retention", "--older-than", "99999999999999d", "--apply"],
        ["retention", "--older-than", "-1d", "--apply"],
    ):
        assert len(run(*args).stderr.strip().splitlines()) == 1, args
    anchors = tmp_path / "heads.jsonl"
    anchors.write_text(json.dumps({"thread_id": "t", "head_seq": "1", "head_hash": "x"}) + "\n")
    assert "head_seq" in run("verify", "--anchors", str(anchors)).stderr
    assert [d["_id"] for d in await raw_docs(database["threads"])] == ["t"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"limit": "5"},
        {"limit": 0},
        {"limit": True},
        {"older_than": timedelta(days=-1)},
        {"newer_than": "3d"},
        {"now": "2030-01-01"},
        {"thread_filter": {"tenant_id": {"$ne": None}}},
        {"on_thread": "print"},
    ],
)
async def test_listing_threads_refuses_arguments_of_another_type(
    database: Any, kwargs: dict[str, Any]
) -> None:
    await talk(Ledger(database), "t", 1)
    with pytest.raises(InvalidInputError):
        [s async for s in list_threads(database, **kwargs)]
    if "thread_filter" in kwargs:
        with pytest.raises(InvalidInputError):
            await count_threads(database, kwargs["thread_filter"])
