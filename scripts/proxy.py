#!/usr/bin/env python3
"""A loopback TCP proxy for MongoDB wire traffic that can lose a server's reply on purpose.

Used by the tests (loaded by path, ``scripts/`` is not a package) to reproduce "the server
committed the write, but the client never heard back"::

    proxy = WireProxy("127.0.0.1", 27017)
    await proxy.start()                      # listens on 127.0.0.1:<free port>
    proxy.drop_replies("insert", "events", count=1)
    client = AsyncMongoClient(proxy.uri + "?directConnection=true")

Everything is forwarded unchanged, except that when the server answers an armed command
(an ``OP_MSG`` whose first key is ``command`` and whose value is ``collection``), the reply
is swallowed and both sides of that connection are closed: the client sees a lost
connection after the server has already done the work.

Listens on 127.0.0.1 only; never connects anywhere but the target given (which must be a
loopback address).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import struct

import bson

HOST = "127.0.0.1"
OP_MSG = 2013
_HEADER = struct.Struct("<iiii")  # messageLength, requestID, responseTo, opCode


def _command_of(message: bytes) -> tuple[str, object] | None:
    """Return (command name, its value) of an OP_MSG request, or None for anything else."""
    _length, _request_id, _response_to, op_code = _HEADER.unpack_from(message)
    if op_code != OP_MSG or len(message) < 21 or message[20] != 0:  # section kind 0 first
        return None
    (doc_len,) = struct.unpack_from("<i", message, 21)
    body = bson.decode(message[21 : 21 + doc_len])
    if not body:
        return None
    name = next(iter(body))
    return name, body[name]


async def _read_message(reader: asyncio.StreamReader) -> bytes | None:
    """Read one whole wire message, or None at end of stream."""
    try:
        header = await reader.readexactly(4)
        (length,) = struct.unpack("<i", header)
        return header + await reader.readexactly(length - 4)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


class WireProxy:
    """A message-aware loopback proxy in front of one MongoDB wire server."""

    def __init__(self, target_host: str, target_port: int) -> None:
        if not ipaddress.ip_address(target_host).is_loopback:
            raise ValueError(f"refusing to proxy to non-loopback address {target_host}")
        self.target = (target_host, target_port)
        self.port = 0
        self.dropped = 0  # replies swallowed so far
        self._armed: tuple[str, str, int] | None = None
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def uri(self) -> str:
        """``mongodb://127.0.0.1:<port>/``."""
        return f"mongodb://{HOST}:{self.port}/"

    def drop_replies(self, command: str, collection: str, count: int = 1) -> None:
        """Swallow the next ``count`` replies to ``command`` on ``collection`` (cutting the connection)."""
        self._armed = (command, collection, count)

    def disarm(self) -> None:
        """Forward everything again."""
        self._armed = None

    async def start(self) -> WireProxy:
        """Listen on 127.0.0.1 (a free port)."""
        self._server = await asyncio.start_server(self._handle, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        """Stop listening and cut every open connection."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()  # both pumps of every connection then see end of stream
        if self._tasks:
            _done, stuck = await asyncio.wait(set(self._tasks), timeout=5)
            for task in stuck:
                task.cancel()
        if self._server is not None:
            await self._server.wait_closed()

    def _matches(self, message: bytes) -> bool:
        if self._armed is None:
            return False
        command = _command_of(message)
        return command is not None and command == (self._armed[0], self._armed[1])

    def _consume(self) -> bool:
        """Count one armed reply as dropped; return whether one was armed."""
        if self._armed is None:
            return False
        command, collection, count = self._armed
        self._armed = (command, collection, count - 1) if count > 1 else None
        self.dropped += 1
        return True

    async def _handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(c_writer)
        s_writer: asyncio.StreamWriter | None = None
        try:
            s_reader, s_writer = await asyncio.open_connection(*self.target)
            self._writers.add(s_writer)
            watched: set[int] = set()  # requestIDs of armed commands on this connection
            cut = asyncio.Event()

            async def upstream() -> None:
                while (message := await _read_message(c_reader)) is not None:
                    if self._matches(message):
                        watched.add(_HEADER.unpack_from(message)[1])
                    s_writer.write(message)
                    await s_writer.drain()
                cut.set()

            async def downstream() -> None:
                while (message := await _read_message(s_reader)) is not None:
                    if _HEADER.unpack_from(message)[2] in watched and self._consume():
                        # The server has done the work; the client never hears of it.
                        cut.set()
                        return
                    c_writer.write(message)
                    await c_writer.drain()
                cut.set()

            pumps = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
            await cut.wait()
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
        except (ConnectionError, OSError):
            pass
        finally:
            for writer in (c_writer, s_writer):
                if writer is not None:
                    self._writers.discard(writer)
                    writer.close()
                    with contextlib.suppress(Exception):
                        await writer.wait_closed()
            self._tasks.discard(task)
