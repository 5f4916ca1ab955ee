"""A TCP proxy in front of a server, which a test uses to cut, refuse or stall the network."""

from __future__ import annotations

import asyncio
from typing import Final
from urllib.parse import urlsplit, urlunsplit

__all__ = ["TcpProxy"]

_CHUNK: Final = 65536


class TcpProxy:
    """Forwards connections from a port of its own to the server of `target_url`.

    `url` is `target_url` with the proxy's port: clients given it go through
    the proxy, others keep talking to the server directly. `sever` drops
    every forwarded connection at once (a TCP reset: a WebSocket peer sees
    1006); while `refusing`, new connections are dropped as they come; `cut`
    does both, `restore` lets connections in again. `hold` stops forwarding
    what clients send (as a stalled server would not read it) until `release`.
    """

    def __init__(self, target_url: str) -> None:
        target = urlsplit(target_url)
        assert target.hostname is not None, target_url
        assert target.port is not None, target_url
        self._target = target
        self.port = 0
        self.refusing = False
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    @property
    def url(self) -> str:
        """The target's URL with the proxy's host and port in it."""
        credentials = self._target.netloc.rpartition("@")[0]
        netloc = f"{credentials}@" if credentials else ""
        return urlunsplit(self._target._replace(netloc=f"{netloc}127.0.0.1:{self.port}"))

    async def start(self) -> TcpProxy:
        """Listen on a free port of 127.0.0.1 (then `port` and `url` are known)."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def sever(self) -> None:
        """Reset every forwarded connection now; new ones still come through unless `refusing`."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def cut(self) -> None:
        """Refuse new connections and reset the open ones; return once their relays ended."""
        self.refusing = True
        self.sever()
        for task in list(self._tasks):
            task.cancel()  # a relay may be waiting on `hold`
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def restore(self) -> None:
        """Let connections through again after `cut` (the ones cut stay closed)."""
        self.refusing = False

    def hold(self) -> None:
        """Keep what clients send from reaching the server, until `release`."""
        self._flowing.clear()

    def release(self) -> None:
        """Forward everything held, late: the server then handles what its clients gave up on."""
        self._flowing.set()

    async def close(self) -> None:
        """Stop listening and end every relay."""
        self.release()
        await self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self._target.hostname, self._target.port
            )
        except OSError:
            writer.transport.abort()
            return
        task = asyncio.create_task(self._connection(reader, writer, up_reader, up_writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connection(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        pair = (writer, up_writer)
        self._writers.update(pair)
        try:
            await asyncio.gather(
                self._relay(reader, up_writer, pair, upstream=True),
                self._relay(up_reader, writer, pair, upstream=False),
            )
        finally:
            for end in pair:
                self._writers.discard(end)
                end.close()

    async def _relay(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
        *,
        upstream: bool,
    ) -> None:
        """Copy one direction; an end of file passes on as one, an error resets both sides."""
        try:
            while data := await source.read(_CHUNK):
                if upstream:
                    await self._flowing.wait()
                sink.write(data)
                await sink.drain()
            if sink.can_write_eof():
                sink.write_eof()
        except (OSError, RuntimeError):
            for end in pair:
                end.transport.abort()
