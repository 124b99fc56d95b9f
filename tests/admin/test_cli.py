"""The admin CLI: command bodies on every tier, and the real command line as an operator types it."""

from __future__ import annotations

import asyncio
import inspect
import io
import json
import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from chatledger import InvalidInputError, Ledger
from chatledger._maf import Message
from chatledger.cli import connection
from chatledger.cli.commands import browse, hold, integrity, removal, stats, transfer
from chatledger.cli.connection import client_options, redact
from chatledger.cli.render import Renderer, visible
from tests.admin.conftest import Clock, branch, talk

REPO = Path(__file__).resolve().parents[2]
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def ui(as_json: bool = False) -> tuple[Renderer, Callable[[], str]]:
    buffer = io.StringIO()
    return Renderer(buffer, io.StringIO(), as_json=as_json, width=200), buffer.getvalue


async def _story(database: Any) -> str:
    ledger = Ledger(database)
    await talk(ledger, "root", 3, tenant_id="acme", user_id="alice")
    b = await branch(ledger, "root", 2, turns=2)
    await talk(ledger, "other", 1, tenant_id="bank", user_id="bob")
    return b


def _dates(value: Any) -> list[str]:
    """Every value of a key ending in _at / _activity, anywhere in a JSON document."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key.endswith(("_at", "_activity")) and item is not None:
                found.append(item)
            found += _dates(item)
    elif isinstance(value, list):
        for item in value:
            found += _dates(item)
    return found


async def test_threads_show_tree_stats(database: Any) -> None:
    b = await _story(database)
    r, text = ui(as_json=True)
    assert await browse.threads_body(database, r, tenant="acme") == 0
    doc = json.loads(text())
    assert (doc["schema"], doc["command"]) == (1, "threads")
    rows = doc["threads"]
    assert [(t["thread_id"], t["events"], t["messages"]) for t in rows] == [("root", 3, 6), (b, 2, 3)]
    assert all(ISO_UTC.match(d) for d in _dates(doc)), _dates(doc)

    r, text = ui(as_json=True)
    assert await browse.show_body(database, r, thread=b, at=3) == 0
    shown = json.loads(text())
    assert [m["contents"][0]["text"] for m in shown["messages"]] == [
        "root q0",
        "root a0",
        "root q1",
        "root a1",
        "edit and retry",
    ]

    r, text = ui()
    await browse.show_body(database, r, thread="root")
    assert "root a2" in text()

    r, text = ui(as_json=True)
    await browse.tree_body(database, r, thread=b)
    tree = json.loads(text())["roots"][0]
    assert tree["thread_id"] == "root"
    assert [(c["thread_id"], c["forked_at"], c["length_messages"]) for c in tree["branches"]] == [(b, 2, 7)]
    r, text = ui()
    await browse.tree_body(database, r, thread="root")
    assert f"{b} forked at seq 2" in text()

    r, text = ui(as_json=True)
    await stats.stats_body(database, r)
    totals = json.loads(text())
    assert (
        totals["threads"],
        totals["roots"],
        totals["branches"],
        totals["events"],
        totals["messages"],
    ) == (3, 2, 1, 6, 11)
    assert totals["bytes"] > 0
    assert ISO_UTC.match(totals["oldest_activity"])
    assert totals["oldest_activity"] <= totals["newest_activity"]


async def test_threads_by_age(database: Any, clock: Clock) -> None:
    ledger = Ledger(database)
    await talk(ledger, "old", 1)
    clock.advance(days=100)
    await talk(ledger, "new", 1)
    r, text = ui(as_json=True)
    await browse.threads_body(database, r, older_than="30d", now=clock.now)
    assert [t["thread_id"] for t in json.loads(text())["threads"]] == ["old"]
    r, text = ui(as_json=True)
    await browse.threads_body(database, r, newer_than="1d", now=clock.now)
    assert [t["thread_id"] for t in json.loads(text())["threads"]] == ["new"]


async def test_verify_exit_status(database: Any) -> None:
    await _story(database)
    r, text = ui()
    assert await integrity.verify_body(database, r) == 0
    assert "OK" in text()
    await database["events"].update_one({"thread_id": "root", "seq": 2}, {"$set": {"count": 3}})
    r, text = ui()
    assert await integrity.verify_body(database, r) == 1
    assert "FAIL thread root seq 2" in text()


async def test_retention_and_erase_bodies(database: Any, clock: Clock) -> None:
    await _story(database)
    clock.advance(days=40)
    r, text = ui(as_json=True)
    assert await removal.retention_body(database, r, older_than="30d", tenant="bank") == 0
    assert json.loads(text())["planned"][0]["thread_id"] == "other"
    assert await database["threads"].count_documents({}) == 3
    assert await hold.hold_body(database, ui()[0], action="set", thread="root", reason="case 1") == 0
    r, text = ui()
    assert await removal.erase_body(database, r, user="alice", apply=True) == 1  # held: kept
    assert "legal hold" in text()
    assert await database["threads"].count_documents({}) == 3


async def test_holds_by_case(database: Any) -> None:
    await _story(database)
    for case in ("A-1", "B-2"):
        r, _ = ui()
        assert (
            await hold.hold_body(database, r, action="set", thread="root", reason="litigation", case=case)
            == 0
        )
    r, text = ui(as_json=True)
    assert (
        await hold.hold_body(database, r, action="release", thread="root", reason="closed", case="A-1") == 0
    )
    assert json.loads(text())["released"] is True
    r, text = ui(as_json=True)
    await browse.threads_body(database, r, tenant="acme")
    root = json.loads(text())["threads"][0]
    assert (root["thread_id"], root["legal_hold"], root["legal_holds"]) == ("root", True, ["B-2"])


# Stored text comes from whoever wrote to the database: never markup, never raw escapes.
HOSTILE_ID = "[/]evil[bold]x"
HOSTILE_USER = "[red]mallory[/]"
ESCAPES = "hi \x1b[2J\x1b]0;pwned\x07 \u202eevil"


async def test_stored_text_is_never_markup_or_raw_escapes(database: Any) -> None:
    ledger = Ledger(database)
    binding = ledger.bind(tenant_id="t[/]", user_id=HOSTILE_USER)
    await binding.append(
        await binding.head(HOSTILE_ID),
        [Message("user", [ESCAPES]), Message("assistant", ["[/]ok"], author_name="[/]bot[blink]")],
    )
    outputs: list[str] = []
    for body, kwargs in [
        (browse.threads_body, {}),
        (browse.show_body, {"thread": HOSTILE_ID}),
        (browse.tree_body, {"thread": HOSTILE_ID}),
        (removal.erase_body, {"user": HOSTILE_USER}),
        (stats.stats_body, {"tenant": "t[/]"}),
    ]:
        r, text = ui()
        await body(database, r, **kwargs)
        outputs.append(text())
    threads, shown, tree, erased, _ = outputs
    assert HOSTILE_ID in threads
    assert HOSTILE_USER in threads
    assert "[/]bot[blink]" in shown
    assert "\\x1b[2J" in shown
    assert "\\u202e" in shown
    assert HOSTILE_ID in tree
    assert HOSTILE_ID in erased
    assert not any("\x1b" in o or "\u202e" in o or "\x07" in o for o in outputs)
    # A stored name cannot fake a line of output of its own; message text keeps its lines.
    binding = Ledger(database).bind()
    fake = Message("assistant", ["a\nb"], author_name="x\nOK: 0 threads")
    await binding.append(await binding.head("plain"), [fake])
    r, text = ui()
    await browse.show_body(database, r, thread="plain")
    assert "(x\\x0aOK: 0 threads)" in text()
    assert "a\nb" in text()  # message text keeps its lines
    # The erasure really happened (after the output, nothing crashed).
    r, _ = ui()
    assert await removal.erase_body(database, r, user=HOSTILE_USER, apply=True) == 0
    assert await database["threads"].count_documents({"user_id": HOSTILE_USER}) == 0


def test_visible_escapes_control_characters() -> None:
    assert visible("a\x1b[31mb") == "a\\x1b[31mb"
    assert visible("line1\nline2") == "line1\\x0aline2"
    assert visible("line1\nline2", multiline=True) == "line1\nline2"
    assert visible("\u202e\u200b") == "\\u202e\\u200b"
    assert visible(None) == "-"


BAD_ARGUMENTS: list[tuple[Any, dict[str, Any]]] = [
    (removal.retention_body, {}),
    (removal.retention_body, {"older_than": "soon"}),
    (removal.retention_body, {"older_than": "-1d"}),
    (removal.retention_body, {"older_than": "99999999999999d"}),
    (removal.retention_body, {"older_than": "30d", "policy_file": "p.json"}),
    (removal.retention_body, {"policy_file": "/nonexistent/policy.json"}),
    (removal.retention_body, {"older_than": "1s", "apply": "false"}),
    (removal.retention_body, {"older_than": "1s", "apply": True, "receipts": "/nonexistent/dir/r.jsonl"}),
    (removal.erase_body, {"apply": True}),
    (removal.erase_body, {"user": "alice", "apply": "false"}),
    (removal.erase_body, {"user": "alice", "tenant": "", "apply": True}),
    (hold.hold_body, {"action": "set", "thread": "root", "reason": ""}),
    (hold.hold_body, {"action": "set", "thread": "nope", "reason": "x"}),
    (browse.show_body, {"thread": "nope"}),
    (browse.show_body, {"thread": "root", "at": 99}),
    (browse.threads_body, {"older_than": "-3d"}),
    (browse.threads_body, {"newer_than": "1000000000000w"}),
    (integrity.verify_body, {"thread": "root", "tenant": "acme"}),
    (transfer.import_body, {"path": "/nonexistent.jsonl"}),
    (transfer.export_body, {"path": "/nonexistent/dir/out.jsonl"}),
]


@pytest.mark.parametrize(("body", "kwargs"), BAD_ARGUMENTS)
async def test_bad_arguments_change_nothing(database: Any, body: Any, kwargs: dict[str, Any]) -> None:
    await _story(database)
    before = [await database[c].count_documents({}) for c in ("threads", "events", "audit")]
    with pytest.raises(InvalidInputError):
        await body(database, ui()[0], **kwargs)
    assert [await database[c].count_documents({}) for c in ("threads", "events", "audit")] == before


@pytest.mark.parametrize(
    "content", ['{"thread_id": "root", "head_seq": 1e999, "head_hash": "x"}\n', "NaN\n", "[1]\n"]
)
async def test_bad_anchor_files_are_bad_input(database: Any, tmp_path: Path, content: str) -> None:
    await _story(database)
    anchors = tmp_path / "anchors.jsonl"
    anchors.write_text(content)
    with pytest.raises(InvalidInputError, match="anchors"):
        await integrity.verify_body(database, ui()[0], anchors=str(anchors))


def test_errors_say_why() -> None:
    from chatledger import StorageUnavailableError
    from chatledger.cli.run import exit_code, message

    error = StorageUnavailableError("database unavailable: ")
    error.__cause__ = TimeoutError()
    assert message(error) == "database unavailable: TimeoutError: no detail given"
    assert exit_code(error) == 1  # mid-command; unreachable at start is ServerUnreachableError: 2
    assert exit_code(InvalidInputError("x")) == 2


def test_credentials_are_redacted() -> None:
    assert redact("at mongodb://alice:S3cretPw@db:27017/x") == "at mongodb://***@db:27017/x"
    assert redact("mongodb+srv://bob@cluster.example/") == "mongodb+srv://***@cluster.example/"


def test_uri_options_win_over_defaults() -> None:
    assert client_options("mongodb://127.0.0.1/?serverSelectionTimeoutMS=1000")["tz_aware"] is True
    assert "serverSelectionTimeoutMS" not in client_options(
        "mongodb://127.0.0.1/?serverSelectionTimeoutMS=1000"
    )
    assert "serverSelectionTimeoutMS" not in client_options(
        "mongodb://127.0.0.1/?serverselectiontimeoutms=1000"
    )
    assert client_options("mongodb://127.0.0.1/")["serverSelectionTimeoutMS"] == 5000


# --------------------------------------------------------------------------- the real command line


def chatledger(
    *args: str,
    uri: str | None = None,
    database: str = "",
    check: int | None = 0,
    env: dict[str, str] | None = None,
    cwd: Path = REPO,
    process: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run the command line as an operator types it: arguments, environment, ``cwd``.

    In this process by default: the same parser, commands, renderer and exit statuses as
    the console script, without a new interpreter per call. It runs in a thread of its own
    (an async test's loop is running in this one, and the command runs its own). With
    ``process`` (:func:`chatledger_process`), the real ``python -m chatledger``, for what
    only a process shows (the entry point, a shell's exit status). Either way the
    environment holds no ``CHATLEDGER_*`` of ours, only ``env``.
    """
    argv = [*args, "--mongodb-uri", uri, "--database", database] if uri is not None else list(args)
    done = _in_process(argv, env or {}, cwd) if not process else _process(argv, env or {}, cwd)
    if check is not None:
        assert done.returncode == check, (args, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def chatledger_process(*args: str, **options: Any) -> subprocess.CompletedProcess[str]:
    """Run the real ``python -m chatledger`` process (see :func:`chatledger`)."""
    return chatledger(*args, process=True, **options)


async def interrupted(
    *args: str,
    uri: str,
    database: str,
    when: Callable[[], Awaitable[bool]],
    signum: int,
    poll: float = 0.01,
) -> subprocess.CompletedProcess[str]:
    """Run the real ``python -m chatledger`` and send it ``signum`` once ``when()`` holds.

    What an operator's Ctrl-C (SIGINT) or a ``timeout``/service stop (SIGTERM) does to a
    command under way. The process is killed if it outlives the test (60 s at most).
    """
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CHATLEDGER_")}
    argv = [sys.executable, "-m", "chatledger", *args, "--mongodb-uri", uri, "--database", database]
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=REPO, env=clean, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(60):
            while not await when():
                assert proc.returncode is None, await proc.communicate()
                await asyncio.sleep(poll)
            proc.send_signal(signum)
            stdout, stderr = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return subprocess.CompletedProcess(argv, proc.returncode, stdout.decode(), stderr.decode())


def _process(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CHATLEDGER_")}
    return subprocess.run(
        [sys.executable, "-m", "chatledger", *argv],
        capture_output=True,
        text=True,
        env={**clean, **env},
        cwd=cwd,
        timeout=120,
    )


def _in_process(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    from typer.testing import CliRunner

    from chatledger.cli.app import app

    overrides: dict[str, str | None] = {k: None for k in os.environ if k.startswith("CHATLEDGER_")}
    overrides.update(env)
    outcome: list[Any] = []

    # Click before 8.2 mixes stderr into stdout unless told not to (8.2 dropped the option).
    separate = (
        {"mix_stderr": False} if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters else {}
    )

    def invoke() -> None:
        outcome.append(CliRunner(**separate).invoke(app, argv, env=overrides, prog_name="chatledger"))

    # A fresh process knows no password yet: redaction must not lean on an earlier call's.
    connection._SECRETS.clear()
    here = Path.cwd()
    os.chdir(cwd)
    try:
        worker = threading.Thread(target=invoke)
        worker.start()
        worker.join(timeout=120)
    finally:
        os.chdir(here)
    assert outcome, f"chatledger {' '.join(argv)} did not finish in 120 s"
    result = outcome[0]
    # An exception other than the exit is what a process would end in a traceback with.
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"chatledger {' '.join(argv)} raised") from result.exception
    return subprocess.CompletedProcess(argv, result.exit_code, result.stdout, result.stderr)


def test_admin_commands_need_a_uri() -> None:
    # The real process: its exit status is what a shell or cron sees.
    done = chatledger_process("stats", check=2)
    assert "--mongodb-uri" in done.stderr


def test_version() -> None:
    from chatledger import __version__

    assert chatledger_process("--version").stdout.strip() == f"chatledger {__version__}"
    assert chatledger("--version").stdout.strip() == f"chatledger {__version__}"


def test_unreachable_server_is_a_usage_error_without_secrets() -> None:
    # Nothing listens on port 1; the URI's own timeout (300 ms) wins over the built-in 5 s.
    dead = "mongodb://alice:S3cretPw@127.0.0.1:1/?serverSelectionTimeoutMS=300"
    for args in (["stats"], ["demo"], ["threads", "--json"]):
        # The error names the URI's timeout (not the built-in one): no wall-clock
        # assertion, which a loaded machine would turn into a flaky test.
        done = chatledger(*args, "--mongodb-uri", dead, check=2)
        assert "S3cretPw" not in done.stdout + done.stderr
        assert "alice" not in done.stdout + done.stderr
        assert "within 0.3 s" in done.stderr
        assert "serverSelectionTimeoutMS" in done.stderr


def test_console_script_parses_every_command() -> None:
    for command in (
        [],
        ["demo"],
        ["threads"],
        ["show"],
        ["tree"],
        ["export"],
        ["import"],
        ["verify"],
        ["heads"],
        ["retention"],
        ["erase"],
        ["stats"],
        ["hold", "set"],
        ["hold", "release"],
        ["roles", "create"],
    ):
        done = chatledger(*command, "--help")
        assert "Usage" in done.stdout
        if command:
            assert "--json" in done.stdout, command
    assert "embedded" not in chatledger("stats", "--help").stdout
    assert "embedded" in chatledger("demo", "--help").stdout


def test_demo_json() -> None:
    doc = json.loads(chatledger("demo", "--json").stdout)
    assert (doc["schema"], doc["command"], doc["database"]) == (1, "demo", "embedded")
    assert doc["branch_cursor"]["thread_id"] != doc["main_cursor"]["thread_id"]


def test_roles_dry_run_prints_append_only_app_role() -> None:
    done = chatledger("roles", "create", "--database", "prod")
    commands = [json.loads(block.split(")")[0]) for block in done.stdout.split("db.runCommand(")[1:]]
    app, operator = commands
    assert app["createRole"] == "chatledger_app"
    app_actions = {a for p in app["privileges"] for a in p["actions"]}
    assert {"find", "insert"} <= app_actions
    assert not app_actions & {"remove", "update"}
    by_collection = {p["resource"]["collection"]: set(p["actions"]) for p in operator["privileges"]}
    assert "remove" in by_collection["events"]
    assert "remove" in by_collection["threads"]
    assert not by_collection["audit"] & {"remove", "update"}
    # The operator's checkpoint writes the Merkle log; nobody may rewrite or delete it.
    for log in ("log_entries", "log_tree"):
        assert {"find", "insert"} <= by_collection[log]
        assert not by_collection[log] & {"remove", "update"}
    assert not {p["resource"]["collection"] for p in app["privileges"]} & {"log_entries", "log_tree"}
    other = chatledger("roles", "create", "--events-collection", "ev2", "--json").stdout
    granted = {p["resource"]["collection"] for c in json.loads(other)["commands"] for p in c["privileges"]}
    assert {"ev2_log_entries", "ev2_log_tree"} <= granted
    as_json = json.loads(chatledger("roles", "create", "--database", "prod", "--json").stdout)
    assert as_json["commands"] == commands
    assert as_json["applied"] is False


def test_roles_apply_needs_a_uri() -> None:
    assert "--mongodb-uri" in chatledger("roles", "create", "--apply", check=2).stderr


async def test_operator_session(real_backend: Any, database: Any, tmp_path: Path) -> None:
    # An operator's day, typed at a terminal against a real server.
    b = await _story(database)
    uri, name = real_backend.uri, database.name
    run = lambda *a, check=0: chatledger(*a, uri=uri, database=name, check=check)  # noqa: E731

    assert json.loads(run("stats", "--json").stdout)["threads"] == 3
    assert "root" in run("threads", "--tenant", "acme").stdout
    assert "root a2" in run("show", "root").stdout
    assert b in run("tree", "root").stdout
    assert json.loads(run("verify", "--json").stdout)["ok"]

    # The URI from a file (kept out of `ps`), and from the environment.
    uri_file = tmp_path / "uri"
    uri_file.write_text(uri + "\n")
    by_file = chatledger("stats", "--json", "--mongodb-uri-file", str(uri_file), "--database", name)
    assert json.loads(by_file.stdout)["threads"] == 3
    by_env = chatledger(
        "stats", "--json", env={"CHATLEDGER_MONGODB_URI_FILE": str(uri_file), "CHATLEDGER_DATABASE": name}
    )
    assert json.loads(by_env.stdout)["threads"] == 3

    anchors = tmp_path / "heads.jsonl"
    anchors.write_text(run("heads").stdout)
    assert "OK" in run("verify", "--anchors", str(anchors)).stdout
    heads_json = tmp_path / "heads.json"
    heads_json.write_text(run("heads", "--json").stdout)
    assert "OK" in run("verify", "--anchors", str(heads_json)).stdout

    export = tmp_path / "all.jsonl"
    exported = json.loads(run("export", "-o", str(export), "--json").stdout)
    assert (exported["command"], exported["threads"]) == ("export", 3)
    held = json.loads(run("hold", "set", "root", "--reason", "case 7", "--json").stdout)
    assert (held["command"], held["action"], held["case"]) == ("hold", "set", "case 7")
    run("hold", "set", "root", "--reason", "case 8")  # exit status 0: the hold is set
    dry = json.loads(run("erase", "--user", "bob", "--json").stdout)
    assert dry["dry_run"]
    assert dry["planned"][0]["thread_id"] == "other"
    assert ISO_UTC.match(dry["planned"][0]["last_activity"])
    assert json.loads(run("stats", "--json").stdout)["threads"] == 3
    run("erase", "--user", "bob", "--apply", "--reason", "GDPR 1")
    assert json.loads(run("stats", "--json").stdout)["threads"] == 2
    # The retention dry run plans the lineages idle over a second (the held one among them)
    # and skips the held one. In-process the commands above can take less than a second:
    # wait it out, or the lineage is still fresh and nothing is planned to skip.
    await asyncio.sleep(1.5)
    assert json.loads(run("retention", "--older-than", "1s", "--json").stdout)["skipped"]
    # Two cases hold it: releasing needs the case (exit 2 names them), one case at a time.
    assert "case 7" in run("hold", "release", "root", "--reason", "closed", check=2).stderr
    run("hold", "release", "root", "--reason", "case closed", "--case", "case 7")
    run("hold", "release", "root", "--reason", "case closed", "--case", "case 8")

    # Bad arguments: clear message, exit 2, no traceback, nothing changed.
    for args in (
        ["retention"],
        ["retention", "--older-than", "soon"],
        ["retention", "--older-than", "-1d"],
        ["retention", "--older-than", "999999999999999d"],
        ["threads", "--older-than", "999999999999999d"],
        ["erase"],
        ["show", "nope"],
        ["hold", "set", "root", "--reason", " "],
        ["show", "root", "--at", "-1"],
        ["show", "root", "--at", "99999999999999999999999999"],
        ["threads", "--limit", "0"],
        ["hold", "release", "root", "--reason", "x", "--case", " "],
        ["export", "-o", str(tmp_path / "missing" / "x.jsonl")],
        ["export", "--json"],
        ["retention", "--older-than", "1s", "--apply", "--receipts", str(tmp_path / "missing" / "r.jsonl")],
        ["import", str(tmp_path / "missing.jsonl")],
    ):
        done = run(*args, check=2)
        assert done.stderr.strip(), args
    bad_anchors = tmp_path / "bad.jsonl"
    bad_anchors.write_text('{"thread_id": "root", "head_seq": 1e999, "head_hash": "x"}\n')
    run("verify", "--anchors", str(bad_anchors), check=2)
    assert json.loads(run("stats", "--json").stdout)["threads"] == 2

    # Restore into a fresh database, and verify.
    fresh = f"t_{uuid.uuid4().hex[:16]}"
    try:
        assert "imported 3 threads" in chatledger("import", str(export), uri=uri, database=fresh).stdout
        assert json.loads(chatledger("verify", "--json", uri=uri, database=fresh).stdout)["ok"]
    finally:
        await database.client.drop_database(fresh)

    # Tampering makes verify exit 1.
    await database["events"].update_one({"thread_id": "root", "seq": 1}, {"$set": {"event_id": "x"}})
    done = run("verify", check=1)
    assert "FAIL thread root seq 1" in done.stdout
