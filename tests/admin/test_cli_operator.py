"""Success that is not success (issue 22): every command fails loudly or says exactly what happened.

Command bodies run on every tier (the in-process way tests/admin drives the CLI); the
real command line runs where exit codes, the connection string and signals matter.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import shlex
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chatledger import Ledger
from chatledger._maf import Message
from chatledger.admin.erasure import NoSuchSubjectError
from chatledger.admin.holds import set_hold
from chatledger.cli.commands import hold, integrity, removal, stats, transfer
from chatledger.cli.render import Renderer
from chatledger.cli.run import exit_code
from chatledger.errors import ChatLedgerError, InvalidInputError
from chatledger.sealing import KeyStore
from chatledger.sealing.sealer import subject_mark
from tests.admin.conftest import talk
from tests.admin.test_cli import REPO, chatledger, interrupted
from tests.admin.test_cli_sealed import sealer_on
from tests.helpers import raw_docs


def ui(as_json: bool = False) -> tuple[Renderer, Callable[[], str], Callable[[], str]]:
    out, err = io.StringIO(), io.StringIO()
    return Renderer(out, err, as_json=as_json, width=200), out.getvalue, err.getvalue


async def _all(database: Any) -> dict[str, list[dict[str, Any]]]:
    names = ("threads", "events", "audit", "keys")
    return {name: await raw_docs(database[name]) for name in names}


# --------------------------------------------------------------------------- 1. empty database


@pytest.mark.parametrize(
    "body",
    [
        lambda db, r, **kw: integrity.verify_body(db, r, **kw),
        lambda db, r, **kw: integrity.heads_body(db, r, **kw),
        lambda db, r, **kw: stats.stats_body(db, r, **kw),
        lambda db, r, tmp, **kw: transfer.export_body(db, r, path=str(tmp / "x.jsonl"), **kw),
    ],
    ids=["verify", "heads", "stats", "export"],
)
async def test_a_database_without_ledger_data_is_an_error(database: Any, tmp_path: Path, body: Any) -> None:
    def run(**kw: Any) -> Any:
        r = ui()[0]
        if "tmp" in body.__code__.co_varnames:
            return body(database, r, tmp_path, **kw)
        return body(database, r, **kw)

    with pytest.raises(ChatLedgerError, match=r"holds no ChatLedger data.*--allow-empty") as caught:
        await run()
    assert exit_code(caught.value) == 1  # problems, not usage: `verify || alert` alerts
    assert not (tmp_path / "x.jsonl").exists()
    assert await run(allow_empty=True) == 0  # asked for explicitly


async def test_verify_of_an_empty_database_says_ok_only_when_asked(database: Any) -> None:
    r, out, _ = ui()
    assert await integrity.verify_body(database, r, allow_empty=True) == 0
    assert "OK: 0 threads" in out()
    await talk(Ledger(database), "t", 1)
    r, out, _ = ui()
    assert await integrity.verify_body(database, r) == 0
    assert "OK: 1 thread," in out()


# --------------------------------------------------------------------------- 2. URI database, collections


async def test_the_uris_database_and_renamed_collections(real_backend: Any, database: Any) -> None:
    renamed = Ledger(database, threads_collection="t_", events_collection="e_", audit_collection="a_")
    await talk(renamed, "dave-1", 2, user_id="dave")
    uri = real_backend.uri.rstrip("/") + f"/{database.name}"
    names = ["--threads-collection", "t_", "--events-collection", "e_", "--audit-collection", "a_"]

    # No --database: the URI's database, as mongosh and mongodump use it.
    done = chatledger("stats", "--json", "--mongodb-uri", uri, *names)
    assert json.loads(done.stdout)["threads"] == 1
    # The default collection names hold nothing: an error, not "0 threads".
    assert "holds no ChatLedger data" in chatledger("stats", "--mongodb-uri", uri, check=1).stderr
    # --database still wins over the URI's.
    chatledger("stats", "--mongodb-uri", uri, "--database", "chatledger_nothing_here", *names, check=1)

    # Erase on the default names finds no such subject (exit 1), on the real ones erases.
    nothing = chatledger("erase", "--user", "dave", "--apply", "--mongodb-uri", uri, check=1)
    assert "no such subject" in nothing.stderr
    erased = chatledger("erase", "--user", "dave", "--apply", "--json", "--mongodb-uri", uri, *names)
    assert len(json.loads(erased.stdout)["removed_receipts"]) == 1
    assert await raw_docs(database["threads"]) == []  # the default collections untouched
    assert [d for d in await raw_docs(database["t_"]) if "removed" not in d] == []
    # Receipts in the renamed audit collection (the subject's tombstone has its receipt too).
    kinds = sorted(d["kind"] for d in await raw_docs(database["a_"]))
    assert kinds == ["keys.destroyed", "removal", "removal.completed"]


# --------------------------------------------------------------------------- 3. erasing nobody


async def test_erasing_a_subject_with_no_data_writes_nothing(database: Any) -> None:
    ledger = Ledger(database, sealer=sealer_on(database))
    await talk(ledger, "alice-1", 1, user_id="alice")
    before = await _all(database)
    for apply in (False, True):
        with pytest.raises(NoSuchSubjectError, match="no such subject: user 'alise'") as caught:
            await removal.erase_body(database, ui()[0], user="alise", apply=apply)
        assert exit_code(caught.value) == 1
    assert await _all(database) == before  # no tombstone, no receipt


async def test_the_dry_run_shows_the_tombstone_and_it_comes_with_its_receipt(database: Any) -> None:
    ledger = Ledger(database, sealer=sealer_on(database))
    await talk(ledger, "alice-1", 1, user_id="alice")
    mark = subject_mark(None, "alice", ledger.ledger_id)  # ledger-scoped (k2)
    r, out, _ = ui()
    assert await removal.erase_body(database, r, user="alice") == 0
    assert f"would write key tombstone {mark}" in out()
    r, out, _ = ui(as_json=True)
    assert await removal.erase_body(database, r, user="alice", apply=True) == 0
    assert json.loads(out())["tombstone"] == {"key_id": mark, "kind": "user", "new": True}
    stored = await KeyStore(database).get(str(mark))
    assert stored is not None
    assert "destroyed_at" in stored
    receipts = {d["_id"]: d for d in await raw_docs(database["audit"])}
    assert stored["receipt_id"] in receipts  # the tombstone's receipt exists


async def test_a_rerun_completes_a_tombstone_left_without_its_receipt(database: Any) -> None:
    # Unsealed content, a key store present: the subject has no keys, only its erased mark.
    await talk(Ledger(database), "bob-1", 1, user_id="bob")
    await KeyStore(database).check_readable()
    r, _, _ = ui()
    assert await removal.erase_body(database, r, user="bob", apply=True) == 0
    mark = str(subject_mark(None, "bob", Ledger(database).ledger_id))
    stored = await KeyStore(database).get(mark)
    assert stored is not None
    assert stored["receipt_id"] in {d["_id"] for d in await raw_docs(database["audit"])}
    # An erasure stopped between the tombstone and its receipt: the receipt is gone.
    await database["audit"].delete_one({"_id": stored["receipt_id"]})
    r, _, _ = ui()
    assert await removal.erase_body(database, r, user="bob", apply=True) == 0  # completes it
    kinds = {d["_id"]: d["kind"] for d in await raw_docs(database["audit"])}
    assert kinds.get(stored["receipt_id"]) == "keys.destroyed"


# --------------------------------------------------------------------------- 4. holds


async def test_a_hold_that_exists_is_shown_as_stored(database: Any) -> None:
    await talk(Ledger(database), "root", 1)
    r, _, _ = ui()
    assert await hold.hold_body(database, r, action="set", thread="root", reason="first", case="C-1") == 0
    r, out, _ = ui(as_json=True)
    again = await hold.hold_body(database, r, action="set", thread="root", reason="second", case="C-1")
    assert again == 1
    shown = json.loads(out())
    assert (shown["created"], shown["hold"]["reason"]) == (False, "first")  # what is stored
    r, _, err = ui()
    assert await hold.hold_body(database, r, action="set", thread="root", reason="x", case="C-1") == 1
    assert "already has a hold for case C-1" in err()
    assert "first" in err()
    r, _, _ = ui()
    assert (
        await hold.hold_body(database, r, action="set", thread="root", reason="x", case="C-1", if_absent=True)
        == 0
    )
    assert [d["kind"] for d in await raw_docs(database["audit"])] == ["hold.set"]  # one receipt
    r, _, _ = ui()
    assert await hold.hold_body(database, r, action="release", thread="root", reason="x", case="C-9") == 1
    r, _, _ = ui()
    assert await hold.hold_body(database, r, action="release", thread="root", reason="x", case="C-1") == 0


# --------------------------------------------------------------------------- 5. export


async def test_export_never_clobbers_and_never_leaves_a_fragment(
    database: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = Ledger(database)
    for n in range(3):
        await talk(ledger, f"t{n}", 2)
    backup = tmp_path / "good_backup.jsonl"
    backup.write_text("the old backup\n")

    with pytest.raises(InvalidInputError, match="exists; pass --force"):
        await transfer.export_body(database, ui()[0], path=str(backup))
    assert backup.read_text() == "the old backup\n"

    real_export = transfer.export_jsonl

    async def interrupted(*args: Any, on_thread: Any = None, **kwargs: Any) -> Any:
        def stop(tid: str) -> None:
            raise KeyboardInterrupt  # the operator's Ctrl-C, after the first thread was written

        return await real_export(*args, on_thread=stop, **kwargs)

    monkeypatch.setattr(transfer, "export_jsonl", interrupted)
    with pytest.raises(KeyboardInterrupt):
        await transfer.export_body(database, ui()[0], path=str(backup), force=True)
    assert backup.read_text() == "the old backup\n"
    assert os.listdir(tmp_path) == ["good_backup.jsonl"]  # no fragment

    monkeypatch.setattr(transfer, "export_jsonl", real_export)
    assert await transfer.export_body(database, ui()[0], path=str(backup), force=True) == 0
    end = json.loads(backup.read_text().splitlines()[-1])
    assert (end["type"], end["threads"], end["events"]) == ("end", 3, 6)


async def test_a_whole_export_carries_receipts_and_tombstones_so_removed_stays_removed(
    database: Any, tmp_path: Path
) -> None:
    ledger = Ledger(database)
    await talk(ledger, "keep", 1, user_id="ann")
    await talk(ledger, "gone", 1, user_id="eve")
    before_erasure = tmp_path / "old.jsonl"
    assert await transfer.export_body(database, ui()[0], path=str(before_erasure)) == 0
    await KeyStore(database).check_readable()
    assert await removal.erase_body(database, ui()[0], user="eve", apply=True) == 0
    backup = tmp_path / "backup.jsonl"
    r, _, err = ui()
    assert await transfer.export_body(database, r, path=str(backup)) == 0
    receipts = await raw_docs(database["audit"])
    assert f"{len(receipts)} receipts, 1 key tombstone\n" in err()

    # A new cluster (here: another database) restored from the backup...
    fresh = database.client[f"{database.name}_restored"]
    try:
        r, out, _ = ui(as_json=True)
        assert await transfer.import_body(fresh, r, path=str(backup)) == 0
        restored = json.loads(out())
        assert (restored["threads"], restored["receipts"], restored["key_tombstones"]) == (
            1,
            len(receipts),
            1,
        )
        assert sorted(d["_id"] for d in await raw_docs(fresh["audit"])) == sorted(d["_id"] for d in receipts)
        mark = str(subject_mark(None, "eve", Ledger(database).ledger_id))  # the source ledger's
        assert [d["_id"] for d in await raw_docs(fresh["keys"])] == [mark]
        # ...keeps "removed stays removed": the erased thread from an older export is refused.
        with pytest.raises(InvalidInputError, match="were removed"):
            await transfer.import_body(fresh, ui()[0], path=str(before_erasure))
        # Re-running the restore changes nothing.
        r, out, _ = ui(as_json=True)
        assert await transfer.import_body(fresh, r, path=str(backup)) == 0
        assert json.loads(out())["receipts_present"] == len(receipts)
        # A filtered export leaves them out unless asked.
        part = tmp_path / "part.jsonl"
        assert await transfer.export_body(database, ui()[0], path=str(part), user="ann") == 0
        assert '"receipt"' not in part.read_text()
    finally:
        await database.client.drop_database(fresh.name)


# --------------------------------------------------------------------------- 6. a complete record


async def test_erase_records_what_it_kept_and_counts_receipts_right(database: Any, tmp_path: Path) -> None:
    ledger = Ledger(database)
    await talk(ledger, "free", 1, user_id="carol")
    await talk(ledger, "held", 1, user_id="carol")
    await set_hold(database, "held", reason="litigation", case="L-1")
    before = {d["_id"] for d in await raw_docs(database["audit"])}
    file = tmp_path / "receipts.jsonl"

    r, out, err = ui()
    assert await removal.erase_body(database, r, user="carol", apply=True, receipts=str(file)) == 1
    new = [d for d in await raw_docs(database["audit"]) if d["_id"] not in before]
    assert sorted(d["kind"] for d in new) == ["removal", "removal.completed", "removal.kept"]
    (kept,) = [d for d in new if d["kind"] == "removal.kept"]
    assert (kept["thread_id"], kept["why"]) == ("held", "legal hold on thread 'held'")
    assert f"{len(new)} receipts written to the audit collection" in out()
    assert sorted(json.loads(line)["_id"] for line in file.read_text().splitlines()) == sorted(
        d["_id"] for d in new
    )
    assert "legal hold on thread 'held'" in err()


# --------------------------------------------------------------------------- 8. malformed Extended JSON


@pytest.mark.parametrize(
    "bad",
    ['{"$oid": "5f1d"}', '{"$numberDecimal": "x"}', '{"$date": {"$numberLong": "999999999999999999"}}'],
    ids=["oid", "decimal", "date"],
)
async def test_malformed_extended_json_is_bad_input(database: Any, tmp_path: Path, bad: str) -> None:
    source = tmp_path / "good.jsonl"
    await talk(Ledger(database), "t", 2)
    assert await transfer.export_body(database, ui()[0], path=str(source)) == 0
    await database["events"].delete_many({})
    await database["threads"].delete_many({})
    lines = source.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith('{"type": "event"'))
    lines[index] = lines[index].replace('"doc": {', f'"doc": {{"x": {bad}, ', 1)
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        InvalidInputError, match=rf"broken.jsonl:{index + 1}: not valid \(Extended\) JSON"
    ) as e:
        await transfer.import_body(database, ui()[0], path=str(broken))
    assert exit_code(e.value) == 2
    assert "\n" not in str(e.value)
    assert await raw_docs(database["events"]) == []  # nothing written


async def test_malformed_extended_json_on_the_command_line(
    real_backend: Any, database: Any, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text(
        '{"type": "header", "format": "chatledger-export", "version": 1, "threads": 1}\n'
        '{"type": "thread", "doc": {"_id": {"$oid": "5f1d"}}}\n'
    )
    done = chatledger("import", str(broken), uri=real_backend.uri, database=database.name, check=2)
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]  # one line, no traceback
    assert "broken.jsonl:2: not valid (Extended) JSON" in done.stderr


# --------------------------------------------------------------------------- 7. Ctrl-C


async def test_ctrl_c_during_erase_says_what_was_done_and_the_rerun_finishes(
    real_backend: Any, database: Any
) -> None:
    ledger = Ledger(database)
    lineages = 40
    for n in range(lineages):
        await talk(ledger, f"d{n:02}", 1, user_id="dora")

    async def two_removals_started() -> bool:
        return await database["audit"].count_documents({"kind": "removal"}) >= 2

    uri, name = real_backend.uri, database.name
    done = await interrupted(
        "erase",
        "--user",
        "dora",
        "--apply",
        uri=uri,
        database=name,
        when=two_removals_started,
        signum=signal.SIGINT,
    )
    out, err = done.stdout, done.stderr
    assert done.returncode == 130, (out, err)
    assert "Traceback" not in err
    assert "erase interrupted:" in err
    assert "lineages removed" in err
    assert "Run the same erase command again to finish it" in err
    # One removal, or several (a run removes lineages in batches), stopped half-way.
    stopped = re.search(r"removals? (\S+(?:, \S+)*)(?: and \d+ more)? (?:was|were) stopped half-way", err)
    halves = stopped.group(1).split(", ") if stopped else []

    # The re-run, right away, finishes it: no 5-minute wait for a removal assumed live.
    rerun = chatledger(
        "erase", "--user", "dora", "--apply", "--json", uri=real_backend.uri, database=database.name
    )
    result = json.loads(rerun.stdout)
    assert set(halves) <= set(result["resumed_receipts"])
    live = [d for d in await raw_docs(database["threads"]) if "removed" not in d]
    assert live == []
    kinds = [d["kind"] for d in await raw_docs(database["audit"])]
    assert kinds.count("removal") == kinds.count("removal.completed")
    assert kinds.count("removal.completed") >= lineages


# --------------------------------------------------------------------------- pipes


async def test_piped_output_keeps_ids_on_one_line(real_backend: Any, database: Any) -> None:
    long_id = "conversation-" + "x" * 150
    await talk(Ledger(database), long_id, 1, tenant_id="acme")
    done = chatledger("threads", uri=real_backend.uri, database=database.name)
    assert [line for line in done.stdout.splitlines() if long_id in line]  # `threads | grep ID` finds it


async def test_a_reader_closing_the_pipe_ends_the_export_quietly(
    real_backend: Any, database: Any, tmp_path: Path
) -> None:
    ledger = Ledger(database)
    binding = ledger.bind()
    at = binding.empty("big")
    for n in range(40):  # ~200 kB: more than a pipe buffer holds
        at = (await binding.append(at, [Message("user", [f"{n} " + "y" * 5000])])).position
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATLEDGER_")}
    errors = tmp_path / "stderr"
    # The shell's own pipe into head, as an operator types it; PIPESTATUS is chatledger's status.
    script = (
        f"{shlex.quote(sys.executable)} -m chatledger export --mongodb-uri {shlex.quote(real_backend.uri)} "
        f"--database {database.name} 2>{shlex.quote(str(errors))} | head -1; exit ${{PIPESTATUS[0]}}"
    )
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", script, cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(60):
        out, _ = await proc.communicate()
    assert b'"header"' in out
    err = errors.read_text()
    assert proc.returncode == 141, err
    assert err.strip() == "", err  # no traceback, no "Exception ignored"
