"""Which agent-framework-core releases each adapter supports, and the error that says so."""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Final

__all__ = [
    "HISTORY_PROVIDER_RANGE",
    "STORE_RANGE",
    "framework_version",
    "restores_checkpoints_without_store",
    "unsupported_framework_message",
]

#: Releases MongoHistoryProvider is tested on (CI: the oldest and the newest ends).
HISTORY_PROVIDER_RANGE: Final = ">=1.0.0,<2"
#: Releases MongoChatMessageStore (the old ChatAgent protocol) is tested on.
STORE_RANGE: Final = ">=1.0.0b251001,<=1.0.0b260130"


def framework_version() -> str:
    """Return the installed agent-framework-core version, or ``"unknown"``."""
    try:
        return version("agent-framework-core")
    except PackageNotFoundError:
        return "unknown"


def unsupported_framework_message(name: str, needs: str = "HistoryProvider") -> str:
    """Return why ``name`` is unavailable on the installed framework, and what to install.

    Args:
        name: The missing ChatLedger class.
        needs: The framework class it subclasses, which the installed release lacks.
    """
    if needs != "HistoryProvider":
        return (
            f"chatledger.{name} needs an agent-framework-core release with {needs} (it subclasses "
            f"it); agent-framework-core {framework_version()} is installed: upgrade: "
            f"pip install -U 'agent-framework-core{HISTORY_PROVIDER_RANGE}'"
        )
    return (
        f"chatledger.{name} needs agent-framework-core {HISTORY_PROVIDER_RANGE} (it subclasses the "
        f"framework's HistoryProvider); agent-framework-core {framework_version()} is installed, "
        f"which has only the old message-store protocol: use chatledger.MongoChatMessageStore "
        f"(supported on {STORE_RANGE}) or upgrade: pip install 'agent-framework-core{HISTORY_PROVIDER_RANGE}'"
    )


@cache
def restores_checkpoints_without_store() -> bool:
    """Return whether the installed framework's ``AgentExecutor`` restores a thread without its store.

    The releases of the old message-store protocol (``AgentThread``, no ``HistoryProvider``;
    1.0.0b251001 … 1.0.0b260130) rebuild a checkpointed thread with
    ``AgentThread.deserialize(payload)``, never the agent's ``chat_message_store_factory``.
    Decided by the framework's public names, as ``chatledger``'s own exports are: the
    releases with ``HistoryProvider`` have no message stores to lose.
    """
    import agent_framework

    return hasattr(agent_framework, "AgentThread") and not hasattr(agent_framework, "HistoryProvider")
