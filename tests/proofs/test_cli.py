"""``checkpoint``, ``prove``, ``verify-proof``, ``new-signing-key`` as an operator and a reviewer run them."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from chatledger import IntegrityError, InvalidInputError, Ledger
from chatledger.cli.commands import ledgerproofs
from chatledger.cli.render import Renderer
from tests.admin.conftest import talk
from tests.admin.test_cli import chatledger, chatledger_process
from tests.proofs import vectors
from tests.proofs.test_log import PUBLIC, SIGNING


def ui(as_json: bool = False) -> tuple[Renderer, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    return Renderer(out, err, as_json=as_json, width=200), out, err


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """The published vectors as files, and the signing key pair of the database tests."""
    for name, text in vectors.build().items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    (tmp_path / "signing.pem").write_bytes(SIGNING)
    (tmp_path / "log.pem").write_bytes(PUBLIC)
    return tmp_path


async def test_operator_checkpoints_and_proves_reviewer_verifies(database: Any, files: Path) -> None:
    ledger = Ledger(database)
    await talk(ledger, "t", 3)
    r, out, err = ui()
    assert await ledgerproofs.checkpoint_body(database, r, signing_key=str(files / "signing.pem")) == 0
    note = out.getvalue()
    assert note.startswith(f"chatledger/{database.name}\n3\n")
    assert "covered by the next checkpoint" in err.getvalue()
    (files / "cp.txt").write_text(note, encoding="utf-8")

    r, out, _ = ui()
    common: dict[str, Any] = {"message": 0, "checkpoint_file": None, "old": None, "new": None, "tenant": None}
    assert await ledgerproofs.prove_body(database, r, thread="t", seq=2, output=None, **common) == 0
    (files / "proof.json").write_text(out.getvalue(), encoding="utf-8")

    r, out, _ = ui(as_json=True)
    assert (
        ledgerproofs.verify_proof_body(
            r, str(files / "proof.json"), [str(files / "cp.txt")], str(files / "log.pem")
        )
        == 0
    )
    doc = json.loads(out.getvalue())
    assert (doc["command"], doc["ok"], doc["leaf_index"], doc["tree_size"]) == ("verify-proof", True, 1, 3)
    assert doc["messages"] == [{"index": 0, "message": {"role": "user", "text": "t q1"}}]

    # More events, a second checkpoint written to a file, and the consistency of the two.
    await talk(ledger, "t", 2)
    r, _, _ = ui(as_json=True)
    await ledgerproofs.checkpoint_body(
        database, r, signing_key=str(files / "signing.pem"), output=str(files / "cp2.txt")
    )
    r, _, _ = ui()
    common.update(message=None, old=str(files / "cp.txt"), new=str(files / "cp2.txt"))
    await ledgerproofs.prove_body(database, r, thread=None, seq=None, output=str(files / "c.json"), **common)
    r, out, _ = ui()
    checkpoints = [str(files / "cp.txt"), str(files / "cp2.txt")]
    assert ledgerproofs.verify_proof_body(r, str(files / "c.json"), checkpoints, str(files / "log.pem")) == 0
    assert out.getvalue().startswith("OK: log chatledger/")
    r, out, _ = ui()
    assert (
        ledgerproofs.verify_proof_body(r, str(files / "c.json"), checkpoints[::-1], str(files / "log.pem"))
        == 1
    )
    assert out.getvalue().startswith("FAIL: ")


async def test_prove_refuses_mixed_or_missing_arguments(database: Any, files: Path) -> None:
    r, _, _ = ui()
    base: dict[str, Any] = {"message": None, "checkpoint_file": None, "tenant": None, "output": None}
    for kwargs in (
        {"thread": None, "seq": None, "old": None, "new": None},
        {"thread": None, "seq": None, "old": str(files / "checkpoint-4.txt"), "new": None},
        {
            "thread": "t",
            "seq": 1,
            "old": str(files / "checkpoint-4.txt"),
            "new": str(files / "checkpoint-7.txt"),
        },
    ):
        with pytest.raises(InvalidInputError):
            await ledgerproofs.prove_body(database, r, **base, **kwargs)
    with pytest.raises(InvalidInputError, match="cannot read"):
        await ledgerproofs.checkpoint_body(database, r, signing_key=str(files / "missing.pem"))


def test_verify_proof_exit_status_from_the_command_line(files: Path) -> None:
    # The real process for one of each status (0, 1, 2): what a reviewer's shell sees.
    ok = chatledger_process(
        "verify-proof",
        "inclusion.json",
        "--checkpoint",
        "checkpoint-7.txt",
        "--public-key",
        "public.pem",
        cwd=files,
    )
    assert ok.stdout.startswith("OK: event 'vector-thread' seq 6 is leaf 5")
    chatledger(
        "verify-proof",
        "consistency.json",
        "--checkpoint",
        "checkpoint-4.txt",
        "--checkpoint",
        "checkpoint-7.txt",
        "--public-key",
        "public.pem",
        cwd=files,
    )
    # Forged, truncated, another key's, the wrong checkpoint: exit 1, the reason on one line.
    (files / "truncated.json").write_text(vectors.build()["inclusion.json"][:200], encoding="utf-8")
    (files / "binary.json").write_bytes(os.urandom(64))
    for proof, checkpoint, key in [
        ("inclusion-forged-path.json", "checkpoint-7.txt", "public.pem"),
        ("inclusion-forged-text.json", "checkpoint-7.txt", "public.pem"),
        ("truncated.json", "checkpoint-7.txt", "public.pem"),
        ("binary.json", "checkpoint-7.txt", "public.pem"),
        ("inclusion.json", "checkpoint-7-other-key.txt", "public.pem"),
        ("inclusion.json", "checkpoint-4.txt", "public.pem"),
        ("inclusion.json", "checkpoint-7.txt", "log.pem"),
        ("inclusion.json", "checkpoint-7.txt", "inclusion.json"),
    ]:
        done = chatledger(
            "verify-proof", proof, "--checkpoint", checkpoint, "--public-key", key, check=1, cwd=files
        )
        assert done.stdout.startswith("FAIL: ")
        assert len(done.stdout.strip().splitlines()) == 1, done.stdout
    # A missing file is a usage error (2), not a failed proof.
    for args in [
        ("missing.json", "--checkpoint", "checkpoint-7.txt", "--public-key", "public.pem"),
        ("inclusion.json", "--checkpoint", "missing.txt", "--public-key", "public.pem"),
        ("inclusion.json", "--checkpoint", "checkpoint-7.txt", "--public-key", "missing.pem"),
        ("inclusion.json", "--checkpoint", "checkpoint-7.txt", "--public-key", "."),
    ]:
        done = chatledger("verify-proof", *args, check=2, cwd=files)
        assert done.stderr.startswith("error: cannot read"), done.stderr
    forged = ("inclusion-forged-text.json", "--checkpoint", "checkpoint-7.txt", "--public-key", "public.pem")
    done = chatledger_process("verify-proof", *forged, "--json", check=1, cwd=files)
    assert json.loads(done.stdout)["ok"] is False
    done = chatledger_process("verify-proof", "missing.json", *forged[1:], check=2, cwd=files)
    assert done.stderr.startswith("error: cannot read"), done.stderr


def test_new_signing_key_writes_a_usable_private_key_and_never_overwrites(tmp_path: Path) -> None:
    chatledger("new-signing-key", "--signing-key", "k.pem", "--public-key", "k.pub", cwd=tmp_path)
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600
    from chatledger import proofs

    private = proofs.load_private_key((tmp_path / "k.pem").read_bytes())
    public = proofs.load_public_key((tmp_path / "k.pub").read_bytes())
    note = proofs.sign_checkpoint("example.com/log", 0, proofs.EMPTY_ROOT, private)
    assert proofs.parse_checkpoint(note, public).size == 0
    before = (tmp_path / "k.pem").read_bytes()
    done = chatledger(
        "new-signing-key", "--signing-key", "k.pem", "--public-key", "other.pub", check=2, cwd=tmp_path
    )
    assert "refusing to overwrite" in done.stderr
    assert (tmp_path / "k.pem").read_bytes() == before


async def test_the_command_line_end_to_end_on_a_server(real_backend: Any, database: Any, files: Path) -> None:
    # The operator's commands against the server; the reviewer's with nothing but files.
    await talk(Ledger(database), "t", 3)
    uri = ["--mongodb-uri", real_backend.uri, "--database", database.name]
    chatledger("checkpoint", "--signing-key", "signing.pem", "-o", "cp.txt", *uri, cwd=files)
    proof = chatledger("prove", "--thread", "t", "--seq", "2", "--message", "1", *uri, cwd=files).stdout
    (files / "p.json").write_text(proof, encoding="utf-8")
    done = chatledger(
        "verify-proof", "p.json", "--checkpoint", "cp.txt", "--public-key", "log.pem", cwd=files
    )
    assert "messages 1 of 2 proven by content" in done.stdout
    # An insider deletes the event outright: its leaf still proves it existed, and prove says so.
    await database["events"].delete_one({"_id": "t#3"})
    proof = chatledger("prove", "--thread", "t", "--seq", "3", "-o", "gone.json", *uri, cwd=files)
    assert "no longer in the database" in proof.stderr
    done = chatledger(
        "verify-proof", "gone.json", "--checkpoint", "cp.txt", "--public-key", "log.pem", cwd=files
    )
    assert "no message content shown" in done.stdout
    done = chatledger("prove", "--thread", "t", "--seq", "9", *uri, check=2, cwd=files)
    assert "not sequenced yet" in done.stderr
    chatledger("checkpoint", "--signing-key", "public.pem", *uri, check=2, cwd=files)


async def test_nothing_a_proof_or_checkpoint_file_holds_is_written(database: Any, files: Path) -> None:
    # prove reads checkpoint files; a forged one is refused, and the database is unchanged.
    ledger = Ledger(database)
    await talk(ledger, "t", 2)
    r, out, _ = ui()
    await ledgerproofs.checkpoint_body(database, r, signing_key=str(files / "signing.pem"))
    note = out.getvalue()

    async def snapshot() -> list[Any]:
        return [
            await database[c].find({}).sort("_id", 1).to_list(None)
            for c in ("log_entries", "log_tree", "events")
        ]

    before = await snapshot()
    forged = note.replace("\n2\n", "\n1\n", 1)
    (files / "forged.txt").write_text(forged, encoding="utf-8")
    (files / "garbage.txt").write_text("not a checkpoint\n", encoding="utf-8")
    common: dict[str, Any] = {"message": None, "old": None, "new": None, "tenant": None, "output": None}
    with pytest.raises(IntegrityError, match="no longer gives the root"):
        await ledgerproofs.prove_body(
            database, ui()[0], thread="t", seq=1, checkpoint_file=str(files / "forged.txt"), **common
        )
    with pytest.raises(InvalidInputError, match="signature block"):
        await ledgerproofs.prove_body(
            database, ui()[0], thread="t", seq=1, checkpoint_file=str(files / "garbage.txt"), **common
        )
    assert await snapshot() == before
