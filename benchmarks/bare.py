"""The baseline: a bare aiohttp handler returning a fixed JSON body."""

from __future__ import annotations

import sys

from aiohttp import web


def main() -> None:
    """python -m benchmarks.bare PORT BODY_FILE"""
    port, body_file = int(sys.argv[1]), sys.argv[2]
    body = open(body_file, "rb").read()

    async def handler(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/v1/jobs/{id}", handler)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
