"""The operators' CLI attacked as an operator at 3 a.m. uses it: typos, pipes, plurals, signals.

Each test is a defect found by running the real command line against a server; command
bodies run on every tier, the real process only where a signal or exit status needs it.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chatledger import Ledger
from chatledger.admin.holds import set_hold
from chatledger.cli.commands import browse, hold, integrity, removal, stats, transfer
from chatledger.cli.render import Renderer, counted
from chatledger.cli.run import exit_code
from chatledger.errors import ChatLedgerError, InvalidInputError, UnknownThreadError
from tests.admin.conftest import branch, talk
from tests.admin.test_cli import chatledger, interrupted


def ui(*, as_json: bool = False) -> tuple[Renderer, Callable[[], str], Callable[[], str]]:
    out, err = io.StringIO(), io.StringIO()
    return Renderer(out, err, as_json=as_json, width=200), out.getvalue, err.getvalue


# --------------------------------------------------------------------------- plurals


def test_counted_says_one_thing_and_many_things() -> None:
    assert [counted(n, "thread") for n in (0, 1, 2)] == ["0 threads", "1 thread", "2 threads"]
    assert counted(1, "key tombstone") == "1 key tombstone"
    assert counted(3, "data key") == "3 data keys"


async def test_counts_of_one_are_singular(database: Any, tmp_path: Path) -> None:
    ledger = Ledger(database)
    await talk(ledger, "solo", 1, user_id="ann")
    await talk(ledger, "other", 2, user_id="bo")

    r, out, _ = ui()
    assert await browse.tree_body(database, r, thread="solo") == 0
    assert "solo: 1 event, 2 messages long" in out()

    r, out, _ = ui()
    assert await integrity.verify_body(database, r, tenant=None, allow_empty=False, thread="solo") == 0
    assert "OK: 1 thread, 1 event, 0 anchors checked" in out()

    r, _, err = ui()
    assert await transfer.export_body(database, r, path=str(tmp_path / "solo.jsonl"), thread="solo") == 0
    assert "exported 1 thread, 1 event, 0 receipts, 0 key tombstones" in err()

    r, out, _ = ui()
    assert await removal.erase_body(database, r, user="ann", apply=False, no_keys=True) == 0
    assert "erasure: would remove 1 lineage (1 thread)" in out()
    assert "lineages" not in out()
    r, out, _ = ui()
    assert await removal.erase_body(database, r, user="ann", apply=True, no_keys=True) == 0
    assert "erasure: removed 1 lineage (1 thread)" in out()
    assert "receipt(s)" not in out()
    assert "receipts written to the audit collection" in out()  # a removal and its completion


# --------------------------------------------------------------------------- unknown subjects


@pytest.mark.parametrize("command", ["verify", "heads", "stats", "export"])
async def test_an_unknown_tenant_is_not_a_clean_result(database: Any, tmp_path: Path, command: str) -> None:
    await talk(Ledger(database), "t", 1, tenant_id="acme", user_id="ann")
    path = tmp_path / "out.jsonl"

    async def run(tenant: str, allow_empty: bool) -> tuple[int, str]:
        r, out, _ = ui()
        options: dict[str, Any] = {"tenant": tenant, "allow_empty": allow_empty}
        if command == "verify":
            return await integrity.verify_body(database, r, **options), out()
        if command == "heads":
            return await integrity.heads_body(database, r, **options), out()
        if command == "stats":
            return await stats.stats_body(database, r, **options), out()
        return await transfer.export_body(database, r, path=str(path), force=True, **options), out()

    # `verify --tenant acmee` printed "OK: 0 threads" and exited 0: the typo stayed green.
    with pytest.raises(
        ChatLedgerError, match=r"no thread of tenant 'acmee' in database .*--allow-empty"
    ) as e:
        await run("acmee", False)
    assert exit_code(e.value) == 1
    assert not path.exists()  # nothing exported for a typo
    assert (await run("acmee", True))[0] == 0  # asked for explicitly
    assert (await run("acme", False))[0] == 0


async def test_an_unknown_user_exports_nothing_and_says_so(database: Any, tmp_path: Path) -> None:
    await talk(Ledger(database), "t", 1, tenant_id="acme", user_id="ann")
    path = tmp_path / "dsar.jsonl"
    with pytest.raises(ChatLedgerError, match=r"no thread of user 'anne'") as e:
        await transfer.export_body(database, ui()[0], path=str(path), user="anne")
    assert exit_code(e.value) == 1
    assert not path.exists()
    with pytest.raises(ChatLedgerError, match=r"no thread of tenant 'acme' and user 'bo'"):
        await transfer.export_body(database, ui()[0], path=str(path), tenant="acme", user="bo")
    assert await transfer.export_body(database, ui()[0], path=str(path), tenant="acme", user="ann") == 0


# --------------------------------------------------------------------------- inherited holds


async def test_threads_shows_protection_inherited_from_the_lineage(database: Any) -> None:
    ledger = Ledger(database)
    await talk(ledger, "root", 2, tenant_id="acme")
    child = await branch(ledger, "root", 1)
    await talk(ledger, "free", 1, tenant_id="acme")
    await talk(ledger, "top", 2, tenant_id="acme")
    low = await branch(ledger, "top", 1)
    await set_hold(database, "root", reason="litigation", case="C-1", by="lawyer")
    await set_hold(database, low, reason="audit", case="C-2", by="auditor")

    r, out, _ = ui(as_json=True)
    assert await browse.threads_body(database, r) == 0
    rows = {t["thread_id"]: t for t in json.loads(out())["threads"]}
    # A branch of a held thread, and the ancestor a held branch replays, are protected too.
    assert {t: (rows[t]["legal_hold"], rows[t]["held_by"]) for t in rows} == {
        "root": (True, "root"),
        child: (False, "root"),
        "free": (False, None),
        "top": (False, low),
        low: (True, low),
    }

    r, out, _ = ui()
    assert await browse.threads_body(database, r) == 0
    lines = {line.split()[1]: line for line in out().splitlines() if line.startswith("│")}
    assert f"via {low}" in lines["top"]
    assert "via root" in lines[child]
    assert "via" not in lines["free"]

    # Filtered to a tenant the held root is not in, the branch still shows its protection.
    await database["threads"].update_one({"_id": child}, {"$set": {"tenant_id": "beta"}})
    r, out, _ = ui(as_json=True)
    assert await browse.threads_body(database, r, tenant="beta") == 0
    assert [(t["thread_id"], t["held_by"]) for t in json.loads(out())["threads"]] == [(child, "root")]


# --------------------------------------------------------------------------- piped stderr


async def test_messages_on_a_redirected_stderr_are_one_line(real_backend: Any, database: Any) -> None:
    await talk(Ledger(database), "t", 1)
    reason = "litigation hold for the matter of " + "x" * 150
    args = ("hold", "set", "t", "--case", "C-1", "--reason", reason)
    chatledger(*args, uri=real_backend.uri, database=database.name)
    again = chatledger(*args, uri=real_backend.uri, database=database.name, check=1)
    # Rich wrapped it at 80 columns: `grep C-1 cron.log` found half a message.
    (line,) = again.stderr.splitlines()
    assert "already has a hold for case C-1" in line
    assert reason in line


# --------------------------------------------------------------------------- SIGTERM


def _partial_with_data(folder: Path) -> list[str]:
    """The export's temporary files in ``folder`` that hold something already."""
    return [n for n in os.listdir(folder) if n.endswith(".partial") and os.path.getsize(folder / n)]


async def test_sigterm_during_export_leaves_the_old_file_and_no_fragment(
    real_backend: Any, database: Any, tmp_path: Path
) -> None:
    ledger = Ledger(database)
    for start in range(0, 300, 30):
        await asyncio.gather(*(talk(ledger, f"t{n:03}", 3) for n in range(start, start + 30)))
    backup = tmp_path / "backup.jsonl"
    backup.write_text("the old backup\n")

    async def under_way() -> bool:
        return any(_partial_with_data(tmp_path))

    # `timeout 1h chatledger export ...` sends SIGTERM once the export is under way.
    uri, name = real_backend.uri, database.name
    done = await interrupted(
        "export",
        "-o",
        str(backup),
        "--force",
        uri=uri,
        database=name,
        when=under_way,
        signum=signal.SIGTERM,
        poll=0.005,  # the export must still be running when the signal goes
    )
    err = done.stderr
    assert done.returncode == 143, err
    assert err.strip() == "error: terminated (SIGTERM)"
    assert backup.read_text() == "the old backup\n"
    assert os.listdir(tmp_path) == ["backup.jsonl"]  # no fragment left


# --------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (("threads", "--limit", "-1"), "Invalid value for '--limit'"),
        (("keys", "list", "--limit", "abc"), "Invalid value for '--limit'"),
        (("show", "t", "--at", "x"), "Invalid value for '--at'"),
        (("threads", "--bogus"), "No such option: --bogus"),
        (("hold", "set"), "Missing argument"),
        (("frob",), "No such command 'frob'"),
    ],
)
def test_usage_errors_are_one_line_in_the_tools_style(argv: tuple[str, ...], said: str) -> None:
    # Click printed four lines ("Usage: ...", "Try ...", "", "Error: ..."): a second error style.
    done = chatledger(*argv, check=2)
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: "), line
    assert said in line
    assert line.endswith("--help')")  # where the whole usage is


def test_a_group_without_a_command_still_shows_its_help() -> None:
    done = chatledger("hold", check=2)
    assert "Commands:" in done.stdout + done.stderr


# --------------------------------------------------------------------------- empty databases


async def test_threads_and_retention_refuse_a_database_without_ledger_data(database: Any) -> None:
    # `threads -d chatlegder` listed "0 threads" and `retention --apply` "removed 0 lineages",
    # both with exit 0: the nightly clean-up stayed green while it removed nothing, ever.
    for run in (
        lambda r, **o: browse.threads_body(database, r, **o),
        lambda r, **o: removal.retention_body(database, r, older_than="1d", apply=True, no_keys=True, **o),
    ):
        with pytest.raises(ChatLedgerError, match=r"holds no ChatLedger data.*--allow-empty") as e:
            await run(ui()[0])
        assert exit_code(e.value) == 1
        assert await run(ui()[0], allow_empty=True) == 0
    assert await database["audit"].count_documents({}) == 0  # nothing written
    await talk(Ledger(database), "t", 1)
    r, out, _ = ui()
    assert await browse.threads_body(database, r) == 0
    assert "1 thread" in out()


def test_threads_and_retention_take_allow_empty_on_the_command_line() -> None:
    for command in (("threads",), ("retention",)):
        assert "--allow-empty" in chatledger(*command, "--help").stdout


async def test_export_of_one_thread_refuses_a_tenant_or_user_too(database: Any, tmp_path: Path) -> None:
    await talk(Ledger(database), "t", 1, tenant_id="acme", user_id="ann")
    path = tmp_path / "out.jsonl"
    # The scope was their intersection: `--thread t --tenant beta` exported 0 threads, exit 0.
    for extra in ({"tenant": "beta"}, {"user": "ann"}):
        with pytest.raises(InvalidInputError, match="not both") as e:
            await transfer.export_body(database, ui()[0], path=str(path), thread="t", **extra)
        assert exit_code(e.value) == 2
        assert not path.exists()


# --------------------------------------------------------------------------- removed threads


async def test_hold_and_export_of_a_removed_thread_say_it_was_removed(database: Any, tmp_path: Path) -> None:
    await talk(Ledger(database), "gone", 1, user_id="eve")
    await talk(Ledger(database), "kept", 1, user_id="ann")
    assert await removal.erase_body(database, ui()[0], user="eve", apply=True, no_keys=True) == 0
    # Each said "no thread 'gone'", as for a typo; show, tree and verify say it was removed.
    attempts = (
        lambda: hold.hold_body(database, ui()[0], action="set", thread="gone", reason="r", case="C"),
        lambda: hold.hold_body(database, ui()[0], action="release", thread="gone", reason="r", case="C"),
        lambda: transfer.export_body(database, ui()[0], path=str(tmp_path / "x.jsonl"), thread="gone"),
    )
    for attempt in attempts:
        with pytest.raises(UnknownThreadError, match=r"thread 'gone' was removed") as e:
            await attempt()
        assert exit_code(e.value) == 2
    with pytest.raises(UnknownThreadError, match=r"no thread 'never'"):
        await hold.hold_body(database, ui()[0], action="set", thread="never", reason="r", case="C")


async def test_tree_shows_protection_inherited_from_the_lineage(database: Any) -> None:
    ledger = Ledger(database)
    await talk(ledger, "root", 2)
    child = await branch(ledger, "root", 1)
    await set_hold(database, child, reason="audit", case="C-2", by="auditor")
    r, out, _ = ui(as_json=True)
    assert await browse.tree_body(database, r, thread="root") == 0
    (top,) = json.loads(out())["roots"]
    assert (top["legal_hold"], top["held_by"]) == (False, child)
    assert (top["branches"][0]["legal_hold"], top["branches"][0]["held_by"]) == (True, child)
    r, out, _ = ui()
    assert await browse.tree_body(database, r, thread="root") == 0
    first = out().splitlines()[0]
    assert first.startswith("root:")
    assert f"protected by the hold on {child}" in first


def test_an_interrupted_batch_names_a_few_receipts_and_counts_the_rest() -> None:
    from chatledger.admin.removal import Removal as Planned
    from chatledger.admin.removal import RemovalReport

    # A batch holds up to hundreds of lineages: a Ctrl-C can stop all of them half-way,
    # and one line naming every receipt id would bury the instruction that follows it.
    planned = [Planned(f"t{n}", (f"t{n}",), (), None) for n in range(300)]
    report = RemovalReport("retention", dry_run=False, planned=planned)
    report.removed = [f"done{n:03d}" for n in range(40)]
    report.interrupted = [f"half{n:03d}" for n in range(200)]
    renderer, _, err = ui()
    assert removal._interrupted(renderer, "retention", report, keys=False).exit_code == 130
    message = err()
    assert "retention interrupted: 40 of 300 lineages removed" in message
    assert "done000, done001, done002, done003, done004 and 35 more" in message
    half = "removals half000, half001, half002, half003, half004 and 195 more were stopped half-way"
    assert half in message
    assert "half005" not in message
    assert "done005" not in message
    assert message.count("\n") == 1
    assert "Run the same retention command again to finish it" in message
