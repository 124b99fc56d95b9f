"""The ``chatledger`` command line: the demo and the operators' admin commands."""

from __future__ import annotations

from chatledger.cli.app import app, main

__all__ = ["app", "main"]
