"""Echo server on asyncio Protocols (TCP) or DatagramProtocol (UDP).

    python asyncio_echo.py [--port 0] [--uvloop] [--udp]

The default loop, or uvloop with ``--uvloop``.  TCP back-pressure: when the
transport's write buffer goes over its high-water mark, reading pauses until it
drains, as a well-behaved asyncio server does.
"""

from __future__ import annotations

import asyncio
import contextlib

from _common import BACKLOG, announce, install_uvloop, parse_args, prepare


class EchoProtocol(asyncio.Protocol):
    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()


class EchoDatagram(asyncio.DatagramProtocol):
    transport: asyncio.DatagramTransport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)


async def main(host: str, port: int, udp: bool) -> None:
    loop = asyncio.get_running_loop()
    if udp:
        transport, _ = await loop.create_datagram_endpoint(EchoDatagram, local_addr=(host, port))
        announce(transport.get_extra_info("sockname")[1])
        await asyncio.Event().wait()
    server = await loop.create_server(EchoProtocol, host, port, backlog=BACKLOG, reuse_address=True)
    announce(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    args = parse_args(__doc__.splitlines()[0], uvloop_flag=True, udp_flag=True)
    prepare()
    if args.uvloop:
        install_uvloop()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.host, args.port, args.udp))
