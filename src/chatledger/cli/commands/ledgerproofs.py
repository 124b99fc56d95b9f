"""``chatledger checkpoint | prove | verify-proof | new-signing-key``: the record, provable to others."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from chatledger import proofs
from chatledger.admin.merkle import (
    checkpoint,
    count_log_events,
    prove_consistency,
    prove_event,
    prove_receipt,
)
from chatledger.cli.options import TenantOption, check_writable, write_whole
from chatledger.cli.render import Renderer, counted
from chatledger.cli.run import PROBLEMS
from chatledger.cli.shared import Connection, shared
from chatledger.errors import InvalidInputError

__all__ = ["checkpoint_body", "prove_body", "read_file", "register", "verify_proof_body"]

_PENDING = "events appended after it are covered by the next checkpoint"


def read_file(path: str, what: str) -> bytes:
    """Return a file's bytes (at most :data:`~chatledger.proofs.MAX_INPUT` plus one, so size is judged later).

    Raises:
        InvalidInputError: it is missing or unreadable (exit status 2).
    """
    try:
        with Path(path).open("rb") as f:
            return f.read(proofs.MAX_INPUT + 1)
    except OSError as e:
        raise InvalidInputError(f"cannot read {what} {path!r}: {e.strerror or e}") from e


def _text(path: str, what: str) -> str:
    raw = read_file(path, what)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidInputError(f"{what} {path!r} is not UTF-8 text") from e


def _emit(ui: Renderer, text: str, output: str | None, option: str) -> None:
    if output is None:
        ui.out.file.write(text)
        ui.out.file.flush()
        return
    write_whole(output, option, text)


async def checkpoint_body(
    db: Any,
    ui: Renderer,
    *,
    signing_key: str,
    tenant: str | None = None,
    origin: str | None = None,
    output: str | None = None,
    full: bool = False,
) -> int:
    """Sequence the pending events of one log, then print (or write) a signed checkpoint of it.

    ``full`` reads every event of the scope, not only those since the last run (less its
    look-back): for a writer later than the look-back, and to find sequenced events that
    were deleted since.
    """
    key = read_file(signing_key, "signing key")
    if output is not None:
        # A bad path fails before any work; an existing copy stays whole until the new one is signed.
        check_writable(output, "--output")
    with ui.progress("sequencing") as tick:
        tick.stage("sequencing", await count_log_events(db, tenant=tenant, full=full))
        result = await checkpoint(db, key, tenant=tenant, origin=origin, on_progress=tick.advance, full=full)
    report = result.report
    if ui.as_json:
        if output is not None:
            _emit(ui, result.note, output, "--output")
        ui.json("checkpoint", {**report.to_dict(), "origin": result.origin, "checkpoint": result.note})
        return 0
    _emit(ui, result.note, output, "--output")
    ui.note(
        f"log {report.log}: {counted(report.added, 'event')} sequenced, tree size {report.size}; "
        f"this checkpoint covers them, {_PENDING}. Keep a copy outside the database."
    )
    return 0


async def prove_body(
    db: Any,
    ui: Renderer,
    *,
    thread: str | None,
    seq: int | None,
    message: int | None,
    checkpoint_file: str | None,
    old: str | None,
    new: str | None,
    tenant: str | None,
    output: str | None,
    receipt: str | None = None,
) -> int:
    """Print an inclusion proof (``--thread --seq``, ``--receipt``) or a consistency one (``--from --to``)."""
    import json

    if receipt is not None:
        if thread is not None or seq is not None or message is not None or old is not None or new is not None:
            raise InvalidInputError(
                "--receipt proves one receipt: do not combine it with --thread/--seq/--from/--to"
            )
        if tenant is not None:
            raise InvalidInputError("receipts are in the default log: do not give --tenant with --receipt")
        note = _text(checkpoint_file, "checkpoint") if checkpoint_file is not None else None
        proof = await prove_receipt(db, receipt, checkpoint_note=note)
        _emit(ui, json.dumps(proof, indent=1, ensure_ascii=False) + "\n", output, "--output")
        return 0
    if (old is None) != (new is None):
        raise InvalidInputError("a consistency proof needs both --from and --to")
    if old is not None and new is not None:
        if thread is not None or seq is not None or message is not None or checkpoint_file is not None:
            raise InvalidInputError("--from/--to prove consistency: do not combine them with --thread/--seq")
        proof = await prove_consistency(db, _text(old, "checkpoint"), _text(new, "checkpoint"), tenant=tenant)
    else:
        if thread is None or seq is None:
            raise InvalidInputError("give --thread and --seq (inclusion) or --from and --to (consistency)")
        note = _text(checkpoint_file, "checkpoint") if checkpoint_file is not None else None
        proof = await prove_event(db, thread, seq, tenant=tenant, message=message, checkpoint_note=note)
        if not proof["messages"]:
            ui.note(
                "the event's content is no longer in the database (removed by retention or erasure, "
                "or deleted): the proof shows its leaf (hash and message digests) only"
                + (", and the receipt that removed it" if "removal" in proof else "")
            )
    _emit(ui, json.dumps(proof, indent=1, ensure_ascii=False) + "\n", output, "--output")
    return 0


def verify_proof_body(ui: Renderer, proof_file: str, checkpoint_files: list[str], public_key: str) -> int:
    """Verify a proof with nothing but the files: exit 0 if it holds, 1 (with the reason) if not."""
    proof = read_file(proof_file, "proof")
    notes = [read_file(path, "checkpoint") for path in checkpoint_files]
    key = read_file(public_key, "public key")
    try:
        verdict = proofs.verify_proof(proof, notes, key)
    except proofs.ProofError as e:
        if ui.as_json:
            ui.json("verify-proof", {"ok": False, "reason": str(e)})
        else:
            ui.line(("FAIL", "red"), f": {e}")
        return PROBLEMS
    if ui.as_json:
        ui.json(
            "verify-proof",
            {
                "ok": True,
                "type": verdict.kind,
                "origin": verdict.origin,
                "tree_size": verdict.tree_size,
                "summary": verdict.summary(),
                "leaf_index": verdict.position if verdict.kind == "inclusion" else None,
                "old_size": verdict.position if verdict.kind == "consistency" else None,
                "leaf": verdict.leaf or None,
                "messages": [{"index": i, "message": m} for i, m in sorted(verdict.messages.items())],
                "receipt": verdict.receipt,
                "removal": verdict.removal,
            },
        )
    else:
        ui.line(("OK", "green"), f": {verdict.summary()}")
    return 0


def new_signing_key_body(ui: Renderer, signing_key: str, public_key: str) -> int:
    """Write a new Ed25519 key pair as PEM (private key readable by its owner only)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    for path in (signing_key, public_key):
        if Path(path).exists():
            raise InvalidInputError(f"{path!r} exists: refusing to overwrite a key")
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        fd = os.open(signing_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private)
        with Path(public_key).open("xb") as f:
            f.write(public)
    except OSError as e:
        raise InvalidInputError(f"cannot write the key pair: {e.strerror or e}") from e
    ui.note(f"wrote {signing_key} (keep it secret) and {public_key} (give it to reviewers)")
    return 0


def register(app: typer.Typer) -> None:
    """Add ``checkpoint``, ``prove``, ``verify-proof`` and ``new-signing-key`` to ``app``."""

    @app.command("checkpoint")
    @shared()
    def checkpoint_(
        connection: Connection,
        signing_key: Annotated[str, typer.Option("--signing-key", help="Ed25519 private key, PEM.")],
        tenant: Annotated[
            str | None, typer.Option("--tenant", help="This tenant's log (default: no tenant).")
        ] = None,
        origin: Annotated[
            str | None,
            typer.Option("--origin", help="The log's name in the checkpoint (default chatledger/<db>…)."),
        ] = None,
        output: Annotated[
            str | None, typer.Option("--output", "-o", help="Write the checkpoint here.")
        ] = None,
        full: Annotated[
            bool,
            typer.Option(
                "--full",
                help="Read every event of the log's scope, not only recent ones (a late writer, "
                "a deleted event).",
            ),
        ] = False,
    ) -> None:
        """Sequence pending events into the log and print a signed checkpoint (C2SP format)."""
        connection.run(
            lambda db, ui: checkpoint_body(
                db, ui, signing_key=signing_key, tenant=tenant, origin=origin, output=output, full=full
            )
        )

    @app.command("prove")
    @shared(json=False)
    def prove(
        connection: Connection,
        thread: Annotated[str | None, typer.Option("--thread", help="The event's thread.")] = None,
        seq: Annotated[int | None, typer.Option("--seq", help="The event's seq.")] = None,
        message: Annotated[
            int | None, typer.Option("--message", help="Only this message of the event (0 = its first).")
        ] = None,
        checkpoint_file: Annotated[
            str | None, typer.Option("--checkpoint", help="Prove against this checkpoint (default: latest).")
        ] = None,
        old: Annotated[str | None, typer.Option("--from", help="Older checkpoint (consistency).")] = None,
        new: Annotated[str | None, typer.Option("--to", help="Newer checkpoint (consistency).")] = None,
        receipt: Annotated[
            str | None,
            typer.Option("--receipt", help="Prove this receipt (default log) instead of an event."),
        ] = None,
        tenant: TenantOption = None,
        output: Annotated[str | None, typer.Option("--output", "-o", help="Write the proof here.")] = None,
    ) -> None:
        """Print an inclusion proof (--thread --seq or --receipt) or a consistency proof (--from --to)."""
        connection.run(
            lambda db, ui: prove_body(
                db,
                ui,
                thread=thread,
                seq=seq,
                message=message,
                checkpoint_file=checkpoint_file,
                old=old,
                new=new,
                tenant=tenant,
                output=output,
                receipt=receipt,
            )
        )

    @app.command("verify-proof")
    @shared(server=False, names=False)
    def verify_proof_(
        connection: Connection,
        proof: Annotated[str, typer.Argument(help="The proof file ('chatledger prove' output).")],
        checkpoint_files: Annotated[
            list[str],
            typer.Option("--checkpoint", help="The checkpoint (twice for consistency: older, then newer)."),
        ],
        public_key: Annotated[str, typer.Option("--public-key", help="The log's Ed25519 public key, PEM.")],
    ) -> None:
        """Check a proof offline (no server): exit 0 if it holds, 1 with the reason if not."""
        connection.work(lambda: verify_proof_body(connection.ui, proof, checkpoint_files, public_key))

    @app.command("new-signing-key")
    @shared(server=False, names=False, json=False)
    def new_signing_key(
        connection: Connection,
        signing_key: Annotated[str, typer.Option("--signing-key", help="Where to write the private key.")],
        public_key: Annotated[str, typer.Option("--public-key", help="Where to write the public key.")],
    ) -> None:
        """Write a new Ed25519 key pair (PEM) for signing checkpoints."""
        connection.work(lambda: new_signing_key_body(connection.ui, signing_key, public_key))
