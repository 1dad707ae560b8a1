"""A TCP relay for emulated links and network faults: it listens on loopback and forwards every
connection to `target`, holding each chunk `delay_ms` in each direction (this kernel has no netem,
so the delay is added here; `tc tbf` shapes the rate). gRPC passes through it unchanged.

With `tls` it terminates TLS, as a reverse proxy in front of a plaintext server does.

The tests also use it to stall the link (bytes held until resumed), to cut it (every connection
closed, new ones refused) and to capture what the workstation sends.
"""

from __future__ import annotations

import asyncio
import ssl
import threading


class Relay:
    def __init__(self, target: tuple[str, int], delay_ms: float = 0.0, capture: bool = False,
                 host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        self.target = target
        self.tls = tls  # given: TLS is terminated here (a reverse proxy in front of a plaintext server)
        self.delay_s = delay_ms / 1e3
        self.capture = capture
        self.host = host
        self.port = 0
        self.sent = bytearray()  # what clients sent towards the target, when capturing
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="relay", daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._flowing: asyncio.Event | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._refusing = False

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> Relay:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> Relay:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------ faults

    def stall(self) -> None:
        """Hold every byte in flight (connections stay open) until `resume()`."""
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def resume(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.set)

    def cut(self) -> None:
        """Close every connection and refuse new ones until `restore()`."""
        asyncio.run_coroutine_threadsafe(self._cut(), self._loop).result(10)

    def restore(self) -> None:
        self._refusing = False

    # ------------------------------------------------------------ inside the loop

    async def _listen(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, self.host, self.port, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        await self._cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _cut(self) -> None:
        self._refusing = True
        for writer in list(self._connections):
            writer.transport.abort()
        self._connections.clear()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            client_writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self._connections |= {client_writer, upstream_writer}
        try:
            await asyncio.gather(self._pipe(client_reader, upstream_writer, outbound=True),
                                 self._pipe(upstream_reader, client_writer, outbound=False))
        except (ConnectionError, OSError):
            pass
        finally:
            for writer in (client_writer, upstream_writer):
                self._connections.discard(writer)
                writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, outbound: bool) -> None:
        """Forward chunks in order, each leaving `delay_s` after it arrived (a link's one-way latency)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        async def send() -> None:
            while True:
                due, chunk = await queue.get()
                if chunk is None:
                    if writer.can_write_eof():
                        writer.write_eof()
                    else:  # TLS has no half-close: the end is told by closing (a response read to the end)
                        writer.close()
                    return
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                await self._flowing.wait()
                writer.write(chunk)
                await writer.drain()

        sender = asyncio.create_task(send())
        try:
            while chunk := await reader.read(1 << 16):
                if outbound and self.capture:
                    self.sent += chunk
                queue.put_nowait((loop.time() + self.delay_s, chunk))
            queue.put_nowait((0.0, None))
            await sender
        finally:
            sender.cancel()
