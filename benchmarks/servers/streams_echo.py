"""Echo server on asyncio streams (StreamReader / StreamWriter), default loop.

python streams_echo.py [--port 0] [--uvloop]
"""

from __future__ import annotations

import asyncio
import contextlib

from _common import BACKLOG, READ_SIZE, announce, install_uvloop, parse_args, prepare


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(READ_SIZE):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def main(host: str, port: int) -> None:
    server = await asyncio.start_server(handle, host, port, backlog=BACKLOG, reuse_address=True)
    announce(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    args = parse_args(__doc__.splitlines()[0], uvloop_flag=True)
    prepare()
    if args.uvloop:
        install_uvloop()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.host, args.port))
