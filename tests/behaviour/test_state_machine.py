"""Random sequences of append / serialize / resume / list against an in-memory model.

The reference model is what a user expects: a conversation line is a list of
messages; a saved cursor remembers the list as it was; resuming a cursor and appending
continues THAT list (branching when needed) and never changes any other saved list.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from chatledger import MongoChatMessageStore
from chatledger.storage.driver import close_client
from tests.conftest import Backend
from tests.helpers import msg, texts


def _machine(backend: Backend) -> type[RuleBasedStateMachine]:
    class LedgerMachine(RuleBasedStateMachine):
        saved = Bundle("saved")

        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.client, self.db = self.run(backend.open())
            self.store = MongoChatMessageStore(self.db)
            # The current line as its events (one list per append): seq k is events[k-1].
            self.events: list[list[str]] = []
            self.counter = 0
            self.snapshots: list[tuple[dict[str, Any], list[list[str]]]] = []

        def run(self, coro: Any) -> Any:
            return self.loop.run_until_complete(coro)

        @property
        def expected(self) -> list[str]:
            return [t for event in self.events for t in event]

        @initialize()
        def start(self) -> None:
            self.events = []

        @rule(size=st.integers(min_value=1, max_value=4))
        def append(self, size: int) -> None:
            batch = []
            for _ in range(size):
                self.counter += 1
                batch.append(f"m{self.counter}")
            self.run(self.store.add_messages([msg(t) for t in batch]))
            self.events.append(batch)

        @rule(target=saved)
        def serialize(self) -> int:
            state = self.run(self.store.serialize_state())
            self.snapshots.append((state, list(self.events)))
            return len(self.snapshots) - 1

        @rule(index=saved)
        def resume(self, index: int) -> None:
            state, events = self.snapshots[index]
            self.store = MongoChatMessageStore(self.db)  # a fresh process, as it were
            self.run(self.store.deserialize_state(dict(state)))
            self.events = list(events)

        @rule(index=saved, data=st.data())
        def resume_at_any_earlier_offset(self, index: int, data: st.DataObject) -> None:
            # Any offset along a saved line, named through that line's own thread: on a
            # branch this may point before its fork, into an ancestor's events.
            state, events = self.snapshots[index]
            offset = data.draw(st.integers(min_value=0, max_value=len(events)), label="offset")
            self.store = MongoChatMessageStore(self.db)
            self.run(self.store.deserialize_state({"thread_id": state["thread_id"], "offset": offset}))
            self.events = list(events[:offset])

        @rule(offset=st.integers(min_value=-30, max_value=30), limit=st.none() | st.integers(0, 10))
        def list_window(self, offset: int, limit: int | None) -> None:
            got = texts(self.run(self.store.list_messages(offset=offset, limit=limit)))
            assert got == self.expected[offset:][:limit]

        @rule(index=saved)
        def saved_cursors_never_change(self, index: int) -> None:
            state, events = self.snapshots[index]
            other = MongoChatMessageStore(self.db)
            self.run(other.deserialize_state(dict(state)))
            assert texts(self.run(other.list_messages())) == [t for event in events for t in event]

        @invariant()
        def state_is_a_small_cursor(self) -> None:
            state = self.run(self.store.serialize_state())
            assert set(state) == {"thread_id", "offset", "v"}

        def teardown(self) -> None:
            async def drop() -> None:
                # Called inside the loop: a Motor client that never did I/O (a run that
                # only serialized an empty store) binds to the running loop here.
                if backend.real_server:
                    await self.client.drop_database(self.db.name)
                await close_client(self.client)

            self.run(drop())
            self.loop.close()

    return LedgerMachine


def test_ledger_matches_the_reference_model(backend: Backend) -> None:
    default = "12" if backend.real_server else "300"
    examples = int(os.environ.get("CHATLEDGER_HYPOTHESIS_EXAMPLES", default))
    run_state_machine_as_test(
        _machine(backend),
        settings=settings(
            max_examples=examples,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
