"""The API reference is generated from the docstrings (CI builds it on every run)."""

from __future__ import annotations

from tests.docs.apiref import missing_docstrings, render


def test_api_reference_builds_and_covers_the_public_api() -> None:
    text = render()
    assert "### class `MongoChatMessageStore" in text
    assert "### function `verify(" in text
    assert missing_docstrings() == []
