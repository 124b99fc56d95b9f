"""The three framework stores take one set of construction keywords (issue 25), declared once.

``StoreOptions`` is that declaration; these tests check that each store accepts every
one of its keywords and refuses a wrong combination, a wrong kind or an unknown keyword
with the same error, and that ``LedgerOptions`` names exactly ``Ledger``'s options.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from chatledger import (
    InvalidInputError,
    Ledger,
    MongoCheckpointStorage,
    MongoHistoryProvider,
    MongoSessionStore,
)
from chatledger.adapters.sources import StoreOptions
from chatledger.ledger import LedgerOptions

STORES = (MongoHistoryProvider, MongoSessionStore, MongoCheckpointStorage)


def test_ledger_options_name_exactly_the_ledgers_keywords() -> None:
    keywords = [
        p.name
        for p in inspect.signature(Ledger).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    assert list(LedgerOptions.__annotations__) == keywords


@pytest.mark.parametrize("store", STORES, ids=lambda s: s.__name__)
async def test_each_store_takes_the_scope_and_the_ledger_options(store: Any, database: Any) -> None:
    async with store(
        database=database,
        tenant_id="acme",
        user_id="ann",
        threads_collection="t2",
        events_collection="e2",
        operation_timeout=5.0,
        write_attempts=2,
        ledger_id="app",
    ) as built:
        assert built.binding.scope.tenant_id == "acme"
        assert built.binding.scope.user_id == "ann"
        assert built.ledger.write_attempts == 2
        assert built.ledger.ledger_id == "app"
        assert set(StoreOptions.__annotations__) >= {"database", "tenant_id", "sealer"}


@pytest.mark.parametrize("store", STORES, ids=lambda s: s.__name__)
def test_each_store_refuses_a_wrong_construction_alike(store: Any, database: Any) -> None:
    with pytest.raises(InvalidInputError, match=r"^database= cannot be combined with client, database_name$"):
        store(database=database, client=database.client, database_name="x")
    with pytest.raises(InvalidInputError, match="got a client"):
        store(database=database.client)
    with pytest.raises(InvalidInputError, match="existing Ledger"):
        store(database=Ledger(database), write_attempts=2)
    with pytest.raises(InvalidInputError, match="a Ledger cannot be combined with connection_string"):
        store(database=Ledger(database), connection_string="mongodb://127.0.0.1:1")
    with pytest.raises(InvalidInputError, match="write_attempts"):
        store(database=database, write_attempts=0)
    with pytest.raises(TypeError, match="no_such_option"):
        store(database=database, no_such_option=1)
