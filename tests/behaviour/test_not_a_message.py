"""Only a framework ``Message`` is stored: a look-alike is refused whole, the thread stays readable.

An object that merely has ``to_dict()`` (even one returning a real message's dict), or a
``Message`` subclass whose ``to_dict()`` a read could not rebuild, used to be stored and
then made every read of the append-only thread fail for good. Every entry point (the
message store, the history provider, the ledger) refuses it with ``InvalidMessageError``
(a ``TypeError`` too) and writes nothing.
"""

from __future__ import annotations

from typing import Any

import pytest

from chatledger import InvalidMessageError, Ledger, MongoChatMessageStore, MongoHistoryProvider
from chatledger._maf import Message
from tests.helpers import msg, raw_docs


class LooksLikeAMessage:
    """Has the message's dict, but is not one."""

    role = "user"
    text = "hi"

    def to_dict(self) -> dict[str, Any]:
        return Message("user", ["hi"]).to_dict()


class OnlyToDict:
    def to_dict(self) -> dict[str, Any]:
        return {"anything": 1}


class OddDict(Message):
    def to_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        return {"type": "message", "role": "user", "contents": [], "no_such_argument": 1}


class NotTyped(Message):
    def to_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        return {"role": "user", "contents": []}


def intruders() -> list[Any]:
    return [LooksLikeAMessage(), OnlyToDict(), OddDict("user", ["x"]), NotTyped("user", ["x"])]


async def snapshot(database: Any) -> tuple[list[Any], list[Any]]:
    return await raw_docs(database["threads"]), await raw_docs(database["events"])


@pytest.mark.parametrize("index", range(4))
async def test_every_entry_point_refuses_a_look_alike_and_writes_nothing(database: Any, index: int) -> None:
    store = MongoChatMessageStore(database, thread_id="t")
    await store.add_messages([msg("one")])
    provider = MongoHistoryProvider(database=database)
    state: dict[str, Any] = {}
    await provider.save_messages("s", [msg("p-one")], state=state)
    binding = Ledger(database).bind()
    head = await binding.head("t")
    before = await snapshot(database)

    intruder = intruders()[index]
    with pytest.raises(InvalidMessageError) as raised:
        await store.add_messages([msg("fine"), intruder])
    assert isinstance(raised.value, TypeError)
    with pytest.raises(InvalidMessageError):
        await provider.save_messages("s", [intruder], state=state)
    with pytest.raises(InvalidMessageError):
        await binding.append(head, [intruder])
    assert await snapshot(database) == before

    # Nothing was poisoned: both threads read, and take real messages.
    await store.add_messages([msg("two")])
    assert [m.text for m in await store.list_messages()] == ["one", "two"]
    assert [m.text for m in await provider.get_messages("s", state=state)] == ["p-one"]


async def test_a_plain_message_subclass_is_refused_with_the_reason(database: Any) -> None:
    # Its to_dict() says "tagged", which Message.from_dict refuses: stored, it would poison the thread.
    class Tagged(Message):
        pass

    store = MongoChatMessageStore(database, thread_id="t")
    with pytest.raises(InvalidMessageError, match="did not return a Message's dict"):
        await store.add_messages([Tagged("user", ["tagged"])])
    assert await snapshot(database) == ([], [])
