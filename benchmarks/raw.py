"""The load generator's yardstick: a raw asyncio server answering every request with one fixed response.

No HTTP parsing beyond finding the end of each request head, no router, no aiohttp: wrk's rate against it
shows how many requests per second wrk can drive here, which must be well above the gateway's figure for
that figure to be the gateway's and not wrk's.
"""

from __future__ import annotations

import asyncio
import sys


def main() -> None:
    """python -m benchmarks.raw PORT BODY_FILE"""
    port, body_file = int(sys.argv[1]), sys.argv[2]
    body = open(body_file, "rb").read()
    response = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)) + body

    class Responder(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport
            self.buffer = b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            heads = self.buffer.count(b"\r\n\r\n")  # wrk's GETs have no body
            if heads:
                self.buffer = self.buffer[self.buffer.rfind(b"\r\n\r\n") + 4:]
                self.transport.write(response * heads)

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(Responder, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
