"""The test vectors published in docs/admin.md: byte for byte what the code builds, and judged as stated."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chatledger import proofs
from tests.proofs import vectors

DOC = Path(__file__).resolve().parents[2] / "docs" / "admin.md"
BLOCK = re.compile(r"^```text vector=(?P<name>\S+)\n(?P<body>.*?)^```", re.MULTILINE | re.DOTALL)


def published() -> dict[str, str]:
    return {m.group("name"): m.group("body") for m in BLOCK.finditer(DOC.read_text(encoding="utf-8"))}


def test_the_published_vectors_are_the_ones_the_code_builds() -> None:
    assert published() == vectors.build()


@pytest.mark.parametrize(("proof", "checkpoints", "reason"), vectors.CASES)
def test_each_published_vector_is_judged_as_the_docs_say(
    proof: str, checkpoints: list[str], reason: str | None
) -> None:
    files = published()
    check = lambda: proofs.verify_proof(files[proof], [files[c] for c in checkpoints], files["public.pem"])  # noqa: E731
    if reason is None:
        check()
    else:
        with pytest.raises(proofs.ProofError, match=re.escape(reason)):
            check()
    cell = "| " + ", ".join(f"`{c}`" for c in checkpoints) + " |"
    rows = [line for line in DOC.read_text(encoding="utf-8").splitlines() if line.startswith(f"| `{proof}`")]
    (row,) = [line for line in rows if cell in line]
    assert ("holds" in row) == (reason is None)
