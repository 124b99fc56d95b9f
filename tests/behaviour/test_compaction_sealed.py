"""Compaction on a sealing ledger: the summary is sealed like a batch, its provenance stays checkable.

The same conversation, compacted by the same strategy on a sealed and an unsealed
ledger, must give the same views; the database must hold no summary text; ``verify``,
``show --raw`` and export must see every original; erasure must leave the summary as
unreadable as the messages it replaced.
"""

from __future__ import annotations

import hashlib
import io
import json
from datetime import UTC, datetime
from typing import Any

import bson
import pytest
from agent_framework import Agent, Message

try:
    from agent_framework import CompactionProvider, SummarizationStrategy  # noqa: F401
except ImportError:  # the matrix's older releases have no compaction strategies
    pytest.skip("this agent-framework-core release has no compaction strategies", allow_module_level=True)

from chatledger import Ledger, MongoHistoryProvider
from chatledger.admin import export_jsonl, import_jsonl, run_erasure, verify
from chatledger.cli.commands import browse
from chatledger.cli.connection import KeyStoreLocation
from chatledger.cli.render import Renderer
from chatledger.demo.joker import JokerChatClient
from chatledger.errors import ContentErasedError, IntegrityError, KeyUnavailableError, ThreadRemovedError
from chatledger.hashing import event_hash
from chatledger.ledger import compaction, documents
from chatledger.sealing import KeyStore, LocalKeyProvider, Sealer, destroy_subject_keys, sealed_problem
from tests.behaviour.test_compaction import Summarizer, agent_and_twin, lines, strategy
from tests.helpers import raw_docs

SOURCE = MongoHistoryProvider.DEFAULT_SOURCE_ID
KEK = bytes(range(32))
PLAIN = {"threads_collection": "plain_threads", "events_collection": "plain_events"}


def sealer_on(database: Any) -> Sealer:
    """A sealer as a process builds one: its own key cache and opened events."""
    return Sealer(KeyStore(database), LocalKeyProvider(KEK))


def sealed(database: Any, **options: Any) -> MongoHistoryProvider:
    return MongoHistoryProvider(database=database, user_id="alice", sealer=sealer_on(database), **options)


async def converse(provider: MongoHistoryProvider, turns: range, session: Any = None) -> Any:
    agent = Agent(JokerChatClient(), "You tell jokes.", context_providers=[provider])
    session = agent.create_session() if session is None else session
    for turn in turns:
        await agent.run(f"tell me joke {turn}", session=session)
    return session


async def summaries(collection: Any) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = (
        await collection.find({"compaction": {"$exists": True}}).sort("seq", 1).to_list(None)
    )
    return docs


def summary_texts(views: list[list[Any]]) -> set[str]:
    return {m.text for view in views for m in view if (m.text or "").startswith("summary ")}


async def test_a_sealed_session_compacts_to_the_unsealed_view_and_stores_no_summary_text(
    database: Any,
) -> None:
    locked, plain = sealed(database), MongoHistoryProvider(database=database, user_id="alice", **PLAIN)
    views: list[list[Any]] = []
    sessions = [await converse(p, range(8)) for p in (locked, plain)]
    for more in (range(8, 14), range(14, 17)):  # twice: the second summary supersedes the first
        for provider, session in zip((locked, plain), sessions, strict=True):
            assert await provider.compact(session, strategy(keep=4))
            await converse(provider, more, session)
        views.append(await locked.transcript(sessions[0]))
        assert lines(views[-1]) == lines(await plain.transcript(sessions[1]))
        assert lines(await locked.transcript(sessions[0], compacted=False)) == lines(
            await plain.transcript(sessions[1], compacted=False)
        )
    assert views[-1][0].text.startswith("summary ")

    # The provenance is stored in clear, as on the unsealed ledger; the summary is not.
    stored, clear = await summaries(database["events"]), await summaries(database["plain_events"])
    assert len(stored) == len(clear) == 2
    provenance = ("first_seq", "last_seq", "through_message", "previous", "strategy")
    assert [[s["compaction"][k] for k in provenance] for s in stored] == [
        [c["compaction"][k] for k in provenance] for c in clear
    ]
    for summary in stored:
        (head,) = summary["compaction"]["messages"]  # one summary message: the head of its ciphertext
        assert head["sealed"].startswith("cl4:k2-u")
        assert type(head["ciphertext"]) is bytes
        assert "text" not in head  # cl4: no placeholder text
    texts = summary_texts(views)
    assert len(texts) == 2
    in_clear, in_sealed = (
        repr(await raw_docs(database["plain_events"])),
        repr(await raw_docs(database["events"])),
    )
    assert all(text in in_clear for text in texts)  # the scan below can fail
    assert not any(text in in_sealed for text in texts)

    # Another process (nothing kept opened) reads the same views; a reader without keys is told so.
    other = sealed(database)
    assert lines(await other.transcript(sessions[0])) == lines(views[-1])
    assert lines(await other.transcript(sessions[0], offset=stored[1]["seq"] - 1)) == lines(views[0])
    with pytest.raises(KeyUnavailableError, match="summary is sealed"):
        await MongoHistoryProvider(database=database, user_id="alice").transcript(sessions[0])

    # verify checks every summary's range against its line, with and without the key.
    for ledger in (locked.ledger, Ledger(database)):
        report = await verify(ledger)
        assert report.ok, report.to_dict()


async def test_the_framework_compaction_provider_on_a_sealed_ledger_matches_the_in_memory_one(
    database: Any,
) -> None:
    history = sealed(database)
    agent, twin, memory = agent_and_twin(history)
    session, twin_session = agent.create_session(), twin.create_session()
    views: list[list[Any]] = []
    for turn in range(20):
        await agent.run(f"joke {turn}", session=session)
        await twin.run(f"joke {turn}", session=twin_session)
        expected = await memory.get_messages(None, state=twin_session.state[memory.source_id])
        views.append(await history.transcript(session))
        assert lines(views[-1]) == lines(expected), turn
    assert len(await summaries(database["events"])) > 2
    assert len(await history.transcript(session, compacted=False)) == 40
    assert summary_texts(views)
    stored = repr(await raw_docs(database["events"]))
    assert not any(text in stored for text in summary_texts(views))
    assert (await verify(history.ledger)).ok


async def test_show_raw_and_export_of_a_sealed_compacted_thread_keep_every_original(
    database: Any, tmp_path: Any
) -> None:
    provider = sealed(database)
    session = await converse(provider, range(4))
    assert await provider.compact(session, strategy(keep=2))
    view, full = await provider.transcript(session), await provider.transcript(session, compacted=False)
    thread = session.state[SOURCE]["thread_id"]

    async def shown(**options: Any) -> dict[str, Any]:
        buffer = io.StringIO()
        renderer = Renderer(buffer, io.StringIO(), as_json=True, width=200)
        status = await browse.show_body(
            database, renderer, thread=thread, kek=LocalKeyProvider(KEK), **options
        )
        assert status == 0
        out: dict[str, Any] = json.loads(buffer.getvalue())
        return out

    compacted, raw = await shown(), await shown(raw=True)
    assert [m["contents"][0]["text"] for m in compacted["messages"]] == [m.text for m in view]
    assert [m["contents"][0]["text"] for m in raw["messages"]] == [m.text for m in full]
    assert len(full) == 8
    assert not compacted["unreadable"]

    # Export carries the sealed summary as it is stored; import gives the same views back.
    path = tmp_path / "all.jsonl"
    with path.open("w", encoding="utf-8") as out:
        await export_jsonl(provider.ledger, out)
    assert view[0].text not in path.read_text(encoding="utf-8")
    for name in ("threads", "events"):
        await database[name].delete_many({})
    provider.ledger.forget()
    await import_jsonl(provider.ledger, path)
    reader = sealed(database)
    assert lines(await reader.transcript(session)) == lines(view)
    assert lines(await reader.transcript(session, compacted=False)) == lines(full)
    assert (await verify(reader.ledger)).ok


async def test_erasure_leaves_the_summary_as_unreadable_as_the_originals(database: Any) -> None:
    provider = sealed(database)
    session = await converse(provider, range(4))
    assert await provider.compact(session, strategy(keep=2))
    text = (await provider.transcript(session))[0].text
    backup = {name: await raw_docs(database[name]) for name in ("threads", "events")}

    await run_erasure(provider.ledger, user_id="alice", apply=True)
    # Removed with the originals, nothing of it is left, and the chains still verify.
    assert await database["events"].count_documents({"compaction": {"$exists": True}}) == 0
    assert not [e for e in await raw_docs(database["events"]) if e.get("messages")]
    assert (await verify(Ledger(database))).ok

    # A backup restored after the erasure: intact (verify passes without a key), unreadable.
    for name, docs in backup.items():
        await database[name].delete_many({})
        await database[name].insert_many(docs)
    assert text not in repr(await raw_docs(database["events"]))
    report = await verify(Ledger(database))
    assert report.ok, report.to_dict()
    reader = sealed(database)
    with pytest.raises(ContentErasedError):
        await reader.transcript(session)
    with pytest.raises(ContentErasedError):
        await reader.transcript(session, compacted=False)
    # Nor does anything compact it again (the summary it would extend cannot be read).
    with pytest.raises(ContentErasedError):
        await reader.compact(session, strategy(keep=2))
    assert len(await raw_docs(database["events"])) == len(backup["events"])
    # The operator's show marks the summary erased, like every original, not tampered.
    buffer = io.StringIO()
    renderer = Renderer(buffer, io.StringIO(), as_json=True, width=200)
    thread = session.state[SOURCE]["thread_id"]
    assert await browse.show_body(database, renderer, thread=thread, keys=KeyStoreLocation()) == 0
    shown = json.loads(buffer.getvalue())
    assert shown["messages"][0]["contents"][0]["text"] == "[content erased]"
    assert [u["why"] for u in shown["unreadable"]] == ["erased"] * len(shown["messages"])


#: sha256 of the BSON of the summary events below, as the code before sealed summaries
#: wrote them (same ids, same clock): an unsealed ledger's summaries are unchanged.
_UNSEALED_GOLDEN = "3110a88404a1f54a9ab06918c54f085f99ae8811cc1b7bb2875904a418cd0dad"


async def test_an_unsealed_ledgers_summaries_are_stored_as_before(
    database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fixed = datetime(2026, 12, 7, 3, 0, 0, 123000, tzinfo=UTC)
    monkeypatch.setattr(documents, "utc_now_ms", lambda: fixed)
    monkeypatch.setattr(compaction, "new_event_id", iter(f"summary-{i}" for i in range(9)).__next__)
    binding = Ledger(database).bind(tenant_id="acme", user_id="u1")
    at = binding.empty("golden")
    for turn in range(4):
        batch = [
            Message("user", [f"q{turn} é"]),
            Message("assistant", [f"a{turn} 🌍"], message_id=f"r{turn}"),
        ]
        at = (await binding.append(at, batch, event_id=f"e-{turn}")).position
    own = await database["events"].find({"thread_id": "golden"}).sort("seq", 1).to_list(None)
    for last, summary in (
        (2, [Message("assistant", ["so far"])]),
        (4, [Message("system", ["all"], author_name="s")]),
    ):
        at = await compaction.compact(
            binding,
            at,
            first_seq=1,
            first_hash=own[0]["hash"],
            last_seq=last,
            last_hash=own[last - 1]["hash"],
            summary=summary,
            strategy="manual",
        )
    stored = await summaries(database["events"])
    assert len(stored) == 2
    digest = hashlib.sha256(b"".join(bson.encode(s) for s in stored)).hexdigest()
    assert digest == _UNSEALED_GOLDEN


async def test_a_tampered_sealed_summary_is_refused_never_shown(database: Any) -> None:
    provider = sealed(database)
    session = await converse(provider, range(4))
    assert await provider.compact(session, strategy(keep=2))
    events = database["events"]
    (summary,) = await summaries(events)
    head = summary["compaction"]["messages"][0]

    async def rewrite(changes: dict[str, Any]) -> None:
        # The attacker re-hashes the event, so only the seal (or the shape) can tell.
        changed = {**summary, **changes}
        changed["hash"] = event_hash(summary["prev_hash"], changed)
        await events.replace_one({"_id": summary["_id"]}, changed)

    async def read() -> Any:
        return await sealed(database).transcript(session)  # another process: nothing kept opened

    flipped = bytes([head["ciphertext"][0] ^ 1]) + head["ciphertext"][1:]
    await rewrite({"compaction": {**summary["compaction"], "messages": [{**head, "ciphertext": flipped}]}})
    with pytest.raises(IntegrityError, match="does not open"):
        await read()
    # The summary's ciphertext moved into its own event's messages does not open as a batch there.
    await rewrite({"messages": [head], "count": 1, "compaction": {**summary["compaction"], "messages": []}})
    with pytest.raises(IntegrityError, match="does not open"):
        await sealed(database).transcript(session, compacted=False)
    # A summary whose sealed form is malformed is named by verify, which needs no key.
    await rewrite({"compaction": {**summary["compaction"], "messages": [{**head, "ciphertext": "AAAA"}]}})
    report = await verify(Ledger(database))
    why = sealed_problem({**head, "ciphertext": "AAAA"})
    assert [p.reason for p in report.problems] == [
        f"event {summary['_id']!r}: the compaction summary's message 0: {why}"
    ]
    with pytest.raises(IntegrityError):
        await read()
    await events.replace_one({"_id": summary["_id"]}, summary)
    assert (await verify(Ledger(database))).ok
    assert lines(await read()) == lines(await provider.transcript(session))


async def test_a_sealed_ledger_compacts_with_an_empty_summary_too(database: Any) -> None:
    # A plain drop (a strategy that summarizes nothing): no ciphertext, nothing to open.
    provider = sealed(database)
    session = await converse(provider, range(3))
    binding = provider.binding
    at = await binding.resolve(session.state[SOURCE])
    own = await database["events"].find({"thread_id": at.thread_id}).sort("seq", 1).to_list(None)
    head = await compaction.compact(
        binding,
        at,
        first_seq=1,
        first_hash=own[0]["hash"],
        last_seq=2,
        last_hash=own[1]["hash"],
        summary=[],
        strategy="drop",
    )
    full = await binding.read(head)
    assert lines(await compaction.compacted_view(binding, head)) == lines(full[4:])
    assert lines(await compaction.compacted_view(sealed(database).binding, head)) == lines(full[4:])
    (summary,) = await summaries(database["events"])
    assert summary["compaction"]["messages"] == []
    assert (await verify(Ledger(database))).ok


async def test_a_provider_does_not_keep_a_sealed_summary_past_its_keys_erasure(database: Any) -> None:
    # A process whose erasure delay is 0: nothing opened outlives the key.
    sealer = Sealer(KeyStore(database), LocalKeyProvider(KEK), cache_ttl=0)
    provider = MongoHistoryProvider(database=database, user_id="alice", sealer=sealer)
    session = await converse(provider, range(4))
    assert await provider.compact(session, strategy(keep=2))
    state = session.state[SOURCE]
    assert (await provider.get_messages(None, state=state))[0].text.startswith("summary ")
    await destroy_subject_keys(KeyStore(database), user_id="alice", apply=True)
    # The summary is opened again (and refused), not served from what the provider read before.
    with pytest.raises(ContentErasedError, match="/summary"):
        await provider.get_messages(None, state=state)


async def test_an_older_summary_replayed_into_the_newer_one_is_refused(database: Any) -> None:
    # A forger with write access puts the thread's first (shorter, stale) summary's
    # ciphertext into its second summary event and re-hashes the chain: verify, which
    # needs no key, cannot tell; every reader must refuse it rather than show the stale
    # summary as the newer one, the process that wrote it (which opened it) included.
    provider = sealed(database)
    session = await converse(provider, range(4))
    assert await provider.compact(session, strategy(keep=2))
    session = await converse(provider, range(4, 8), session)
    assert await provider.compact(session, strategy(keep=2))
    before = lines(await provider.transcript(session))
    older, newer = await summaries(database["events"])
    assert older["thread_id"] == newer["thread_id"]
    events = database["events"]
    prev = newer["prev_hash"]
    tail = {"thread_id": newer["thread_id"], "seq": {"$gte": newer["seq"]}}
    async for later in events.find(tail).sort("seq", 1):
        doc = dict(later)
        if doc["_id"] == newer["_id"]:
            doc["compaction"] = {**doc["compaction"], "messages": older["compaction"]["messages"]}
        doc["prev_hash"] = prev
        doc["hash"] = prev = event_hash(prev, doc)
        await events.replace_one({"_id": doc["_id"]}, doc)
    assert (await verify(Ledger(database))).ok  # re-hashed: only the seal can tell
    for reader in (sealed(database), provider):
        with pytest.raises(IntegrityError, match="does not open"):
            await reader.transcript(session)
    # The originals are still there, each under its own seal.
    full = lines(await sealed(database).transcript(session, compacted=False))
    assert full[-len(before) + 1 :] == before[1:]


async def test_a_long_lived_provider_cannot_compact_after_the_users_erasure(database: Any) -> None:
    # The provider read the conversation (its caches hold the line, its sealer the key);
    # another process erases the user. Compacting then must refuse before any summarizer
    # is handed the erased conversation, and store nothing.
    provider = sealed(database)
    session = await converse(provider, range(4))
    assert len(await provider.transcript(session)) == 8
    operator = Ledger(database, sealer=sealer_on(database))
    assert (await run_erasure(operator, user_id="alice", apply=True)).removed
    asked: list[str] = []

    class Spy(Summarizer):
        def _inner_get_response(self, *, messages: Any, **kwargs: Any) -> Any:
            asked.extend(m.text or "" for m in messages)
            return super()._inner_get_response(messages=messages, **kwargs)

    spied = SummarizationStrategy(client=Spy(), target_count=2, threshold=2, max_summary_input_tokens=None)
    with pytest.raises(ThreadRemovedError):
        await provider.compact(session, spied)
    assert asked == []
    assert await database["events"].count_documents({"compaction": {"$exists": True}}) == 0
    assert not [e for e in await raw_docs(database["events"]) if e.get("messages")]
    assert (await verify(Ledger(database))).ok
