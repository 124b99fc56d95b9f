"""The seed notebook's story, retold on ChatLedger and Agent Framework 1.x.

1. A Joker agent tells a pirate joke; the session is serialized (a tiny cursor).
2. A fresh agent and provider resume that snapshot and ask for the same joke in a
   pirate's voice: it can only do so because the history came back from MongoDB.
3. The FIRST snapshot is resumed again with a different follow-up: the conversation
   branches; the line from step 2 is untouched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from agent_framework import Agent, AgentSession
from rich.console import Console
from rich.panel import Panel
from rich.tree import Tree

from chatledger.adapters.history import MongoHistoryProvider
from chatledger.demo.joker import JokerChatClient
from chatledger.ledger import Ledger
from chatledger.models import Cursor

__all__ = ["DemoResult", "run_demo"]

FIRST_ASK = "Tell me a joke about a pirate."
FOLLOW_UP = "Now tell the same joke in the voice of a pirate, and add some emojis to the joke."
BRANCH_ASK = "Tell that joke again, but as a robot."


@dataclass(frozen=True)
class DemoResult:
    """What the demo produced, for tests and for the caller's own display."""

    snapshot: dict[str, Any]
    main_line: list[tuple[str, str]]
    branch_line: list[tuple[str, str]]
    main_cursor: Cursor
    branch_cursor: Cursor


def _agent(ledger: Ledger) -> tuple[Agent[Any], MongoHistoryProvider]:
    # A fresh client, provider and agent each time: nothing survives in memory between
    # phases, so whatever the Joker remembers came back from the database.
    provider = MongoHistoryProvider(database=ledger)
    agent: Agent[Any] = Agent(
        JokerChatClient(),
        "You are good at telling jokes.",
        name="Joker",
        context_providers=[provider],
    )
    return agent, provider


async def _line(ledger: Ledger, cursor: Cursor) -> list[tuple[str, str]]:
    binding = ledger.bind(source_id=MongoHistoryProvider.DEFAULT_SOURCE_ID)
    return [(str(m.role), m.text) for m in await binding.read(await binding.resolve(cursor))]


async def run_demo(database: Any, *, console: Console | None = None, where: str = "") -> DemoResult:
    """Run the story against ``database`` and print it; return what it produced.

    Args:
        database: Any database handle ChatLedger accepts.
        console: Where to print (a quiet console for tests); stdout by default.
        where: A description of where the data goes, printed at the start.
    """
    out = console or Console()
    ledger = Ledger(database)
    source = MongoHistoryProvider.DEFAULT_SOURCE_ID
    out.rule("[bold]ChatLedger demo: the Joker, saved, resumed and branched")
    if where:
        out.print(f"Storing the conversation in {where}")
    out.print()

    out.print("[bold]--- Phase 1: initial conversation ---")
    agent, _ = _agent(ledger)
    session = agent.create_session()
    out.print(f"User:  {FIRST_ASK}")
    out.print(f"Agent: {(await agent.run(FIRST_ASK, session=session)).text}")
    out.print()

    out.print("[bold]--- Phase 2: suspend (serialize the session) ---")
    snapshot = session.to_dict()
    compact = json.dumps(snapshot, separators=(",", ":"))
    out.print(f"Serialized session ({len(compact)} bytes; it holds a cursor, not the history):")
    out.print(Panel(compact, expand=False))
    out.print()

    async def resume_and_ask(title: str, ask: str) -> Cursor:
        out.print(f"[bold]--- {title} ---")
        agent, _ = _agent(ledger)
        resumed = AgentSession.from_dict(json.loads(compact))
        out.print(f"User:  {ask}")
        out.print(f"Agent: {(await agent.run(ask, session=resumed)).text}")
        out.print()
        return Cursor.from_state(resumed.state[source])

    main_cursor = await resume_and_ask("Phase 3: resume in a fresh agent and provider", FOLLOW_UP)
    branch_cursor = await resume_and_ask("Phase 4: resume the FIRST snapshot again: a branch", BRANCH_ASK)

    main_line = await _line(ledger, main_cursor)
    branch_line = await _line(ledger, branch_cursor)
    branch = await ledger.thread(branch_cursor.thread_id, None)
    tree = Tree(f"[bold]thread {main_cursor.thread_id}[/] ({len(main_line)} messages)")
    for role, text in main_line:
        tree.add(f"[cyan]{role}[/]: {text}")
    if branch is not None and branch.parent is not None:
        sub = tree.add(
            f"[bold magenta]branch {branch.id}[/] forked at event {branch.parent['offset']} "
            f"({len(branch_line)} messages in its line)"
        )
        for role, text in branch_line[branch.base_messages :]:
            sub.add(f"[cyan]{role}[/]: {text}")
    out.print("[bold]--- Both lines of the conversation, as stored ---")
    out.print(tree)
    out.print()
    out.print("[green]Done: the history came back from the store, and the branch left the original intact.")
    return DemoResult(snapshot, main_line, branch_line, main_cursor, branch_cursor)
