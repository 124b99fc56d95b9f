"""Smoke test: EchoJokerClient + the built-in in-memory ChatMessageStore on agent-framework-core 1.0.0b260130.

Run with the old-MAF venv:  .venv-maf-old/bin/python compat/maf_1_0_0b260130/smoke.py
Two turns, with ``await thread.serialize()`` and ``await agent.deserialize_thread(...)`` in between;
exits non-zero if the second reply does not prove that the first turn came back.
"""

from __future__ import annotations

import asyncio
import json
import sys
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from agent_framework import ChatAgent, ChatMessageStore
from offline_client import EchoJokerClient, reply_for

EXPECTED_VERSION = "1.0.0b260130"


async def main() -> int:
    """Run two turns with a serialize/deserialize_thread round trip; return the exit code."""
    maf_version = version("agent-framework-core")
    if maf_version != EXPECTED_VERSION:
        print(f"expected agent-framework-core {EXPECTED_VERSION}, found {maf_version}", file=sys.stderr)
        return 2
    client = EchoJokerClient()
    agent = ChatAgent(chat_client=client, name="joker", chat_message_store_factory=ChatMessageStore)

    thread = agent.get_new_thread()
    first = await agent.run("Tell me a joke", thread=thread)
    print("turn 1:", first.text)

    saved = json.loads(json.dumps(await thread.serialize()))  # must survive a JSON round trip
    restored = await agent.deserialize_thread(saved)
    second = await agent.run("Another one", thread=restored)
    print("turn 2:", second.text)

    history = await restored.message_store.list_messages() if restored.message_store else []
    checks = {
        "turn 1 saw only its input": len(client.calls[0]) == 1,
        "turn 2 saw the restored history plus its input": len(client.calls[1]) == 3,
        "turn 2 quotes turn 1": repr(first.text) in second.text,
        "reply is deterministic": second.text == reply_for(client.calls[1]),
        "store holds 4 messages": [m.role.value for m in history] == ["user", "assistant"] * 2,
        "author_name set by ChatAgent": history[1].author_name == "joker",
    }
    for name, ok in checks.items():
        print(("PASS " if ok else "FAIL ") + name)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
