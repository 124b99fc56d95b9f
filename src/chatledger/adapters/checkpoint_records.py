"""How a workflow checkpoint is written as ledger events and read back: its record, and its chunks.

A checkpoint is one event holding one message of role :data:`CHECKPOINT_ROLE`: the
framework's own encoding of the checkpoint as JSON. An encoding longer than
:data:`CHUNK_CHARS` is stored in chunks first (events of role :data:`CHUNK_ROLE`, event
ids :data:`CHUNK_ID_PREFIX` + digest + index, right after the predecessor), then
committed by its record right after them, which names their number and their SHA-256.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final

from agent_framework import WorkflowCheckpoint, WorkflowCheckpointException

from chatledger.adapters.checkpoint_encoding import (
    PICKLED_KEY,
    decode_checkpoint_value,
    encode_checkpoint_value,
)
from chatledger.adapters.sources import record_text
from chatledger.admin.records import CHECKPOINT_ROLE, CHUNK_ROLE, WORKFLOW_KEY, chunked_record
from chatledger.errors import ConcurrencyError, IntegrityError
from chatledger.ledger import Binding, Ledger, Position, storage_of
from chatledger.models import ThreadRecord

__all__ = [
    "CHECKPOINT_ROLE",
    "CHUNK_CHARS",
    "CHUNK_ID_PREFIX",
    "CHUNK_ROLE",
    "WORKFLOW_KEY",
    "CheckpointRecords",
    "sha256",
]

#: Encoded checkpoints longer than this (characters, all ASCII) are stored in chunks of this size.
CHUNK_CHARS: Final = 4 * 1024 * 1024
#: Event ids of chunks start with this; no checkpoint id may.
CHUNK_ID_PREFIX: Final = "chatledger:chunk:"


def sha256(text: str) -> str:
    """Return the SHA-256 of an encoded checkpoint (hex)."""
    # Encoded checkpoints are ASCII; "surrogatepass" keeps a tampered record hashable.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _chunk_id(digest: str, index: int) -> str:
    return f"{CHUNK_ID_PREFIX}{digest[:40]}:{index}"


def _chunked(record: str, doc: Mapping[str, Any]) -> dict[str, Any] | None:
    """Return what a chunked record says of its chunks (``None``: the record holds the checkpoint)."""
    return chunked_record(record, f"event {doc.get('_id')!r}")


def _metadata(at: Position, workflow_name: str) -> dict[str, str] | None:
    """Return the metadata of a run's thread if an append at ``at`` creates it.

    An append uses metadata only to create a thread (a branch takes its parent's): on an
    existing one, none is passed (and so none is validated again).
    """
    return {WORKFLOW_KEY: workflow_name} if at.thread is None else None


class CheckpointRecords:
    """Encodes, writes and reads checkpoint records (and their chunks) in one storage's scope.

    Args:
        ledger: The storage's ledger.
        binding: The storage's scoped binding.
        allowed_types: Types beyond the framework's safe set that decoding may restore.
    """

    def __init__(self, ledger: Ledger, binding: Binding, allowed_types: frozenset[str]) -> None:
        self.ledger = ledger
        self.binding = binding
        self.allowed_types = allowed_types

    # ------------------------------------------------------------------ encoding

    def encode(self, checkpoint: WorkflowCheckpoint) -> str:
        """Return the checkpoint's encoding, refused now if it could never be loaded under the allowed types.

        Raises:
            WorkflowCheckpointException: it cannot be encoded, or a pickled value would not load.
        """
        try:
            pickles: list[dict[str, str]] = []
            encoded = encode_checkpoint_value(checkpoint.to_dict(), pickles)
            # Decoded once under this storage's allowed types, as the file storage does:
            # a checkpoint that could never be loaded is refused now, not at resume time.
            # Only its pickled values can fail (the rest decodes as it is), so only they are.
            for envelope in pickles:
                decode_checkpoint_value(envelope, allowed_types=self.allowed_types)
            return json.dumps(encoded, ensure_ascii=True, separators=(",", ":"), allow_nan=True)
        except WorkflowCheckpointException:
            raise
        except Exception as e:
            raise WorkflowCheckpointException(
                f"checkpoint {checkpoint.checkpoint_id} cannot be encoded or restored under this storage's "
                f"allowed types ({type(e).__name__}: {e}); refusing to save"
            ) from e

    def decode(self, text: str, where: str) -> WorkflowCheckpoint:
        """Return the checkpoint an encoding holds (``where`` names it in errors)."""
        try:
            encoded = json.loads(text)
        except ValueError as e:
            raise IntegrityError(f"{where} holds malformed JSON: {e}") from e
        if PICKLED_KEY in text or "\\u00" in text:
            encoded = decode_checkpoint_value(encoded, allowed_types=self.allowed_types)
        # Otherwise no key of it can read "__pickled__" (not even spelt with escapes), so
        # nothing is to be unpickled and decoding would only copy what json.loads built.
        return WorkflowCheckpoint.from_dict(encoded)

    # ------------------------------------------------------------------ reading

    async def text(self, doc: Mapping[str, Any]) -> str:
        """Return the text of a record's (or chunk's) one message, opened if sealed."""
        return await record_text(self.ledger, doc, (CHECKPOINT_ROLE, CHUNK_ROLE), self.binding.scope)

    async def digest_of(self, doc: Mapping[str, Any]) -> str:
        """Return the SHA-256 of the encoded checkpoint a record commits (without reading chunks)."""
        record = await self.text(doc)
        chunked = _chunked(record, doc)
        if chunked is not None:
            return str(chunked["sha256"])
        return sha256(record)

    async def _scoped_thread(self, thread_id: str) -> ThreadRecord | None:
        return await self.ledger.thread(thread_id, self.binding.scope)

    async def payload(self, doc: Mapping[str, Any]) -> str:
        """Return the encoded checkpoint a record commits, reassembling its chunks if it has any."""
        record = await self.text(doc)
        chunked = _chunked(record, doc)
        if chunked is None:
            return record
        count, seq = chunked["chunks"], int(doc["seq"])
        record_thread = await self.ledger.thread(str(doc["thread_id"]), self.binding.scope)
        if record_thread is None or seq - count <= 0:
            raise IntegrityError(f"the chunks of event {doc.get('_id')!r} are missing")
        parts: list[str] = []
        for index, at in enumerate(range(seq - count, seq)):
            # The chunks are the events right before the record along its line (on its
            # thread, or on an ancestor when the record or a chunk branched).
            holder = await record_thread.holder_along(at, self._scoped_thread)
            # By primary key, one chunk per read: an index lookup where indexes exist (the
            # cheapest read FerretDB v1 has too), and no reply comes near its 48 MB limit.
            chunk = None if holder is None else await storage_of(self.ledger).events.at(holder, at, full=True)
            if chunk is None or chunk.get("event_id") != _chunk_id(chunked["sha256"], index):
                raise IntegrityError(f"chunk {index} of event {doc.get('_id')!r} is missing")
            parts.append(await self.text(chunk))
        text = "".join(parts)
        if sha256(text) != chunked["sha256"]:
            raise IntegrityError(f"the chunks of event {doc.get('_id')!r} do not match its digest")
        return text

    # ------------------------------------------------------------------ writing

    async def write(self, at: Position, checkpoint_id: str, text: str, workflow_name: str) -> Position:
        """Append the checkpoint's record after ``at`` (its chunks first, if large); return its position."""
        record = text
        if len(text) > CHUNK_CHARS:
            at, chunked = await self.write_chunks(at, text, sha256(text), workflow_name)
            record = json.dumps(chunked, separators=(",", ":"))
        try:
            result = await self.binding.append(
                at,
                stored=[{"role": CHECKPOINT_ROLE, "text": record}],
                event_id=checkpoint_id,
                metadata=_metadata(at, workflow_name),
            )
        except ConcurrencyError as e:  # pragma: no cover - only strict appends raise it
            raise IntegrityError(f"checkpoint {checkpoint_id!r} could not be placed: {e}") from e
        return result.position

    async def write_chunks(
        self, at: Position, text: str, digest: str, workflow_name: str
    ) -> tuple[Position, dict[str, Any]]:
        """Append the chunks of ``text`` after ``at``; return the position after them and the record."""
        pieces = [text[i : i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)]
        for index, piece in enumerate(pieces):
            # Not strict: a position taken meanwhile branches, and the next chunk follows
            # on that branch, so the chunks always lie right before the record along its
            # line. A retried save finds each chunk an earlier try wrote (same event id,
            # same content, right after the same position) and goes on after it.
            result = await self.binding.append(
                at,
                stored=[{"role": CHUNK_ROLE, "text": piece}],
                event_id=_chunk_id(digest, index),
                metadata=_metadata(at, workflow_name),
            )
            at = result.position
        return at, {"chunked": {"chunks": len(pieces), "sha256": digest, "chars": len(text)}}
