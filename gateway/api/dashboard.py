"""GET /ui/: the dashboard, static files from the installed package (no CDN, no build step).

The page signs in with an API key kept in session storage and calls the /v1 API like any client; the
gateway's Content-Security-Policy (default-src 'self') holds for it: no inline script or style."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

HERE = Path(__file__).with_name("ui")
# The dashboard's pages: nothing but the gateway's own origin may be loaded, no inline script or style.
SECURITY_HEADERS = {"Content-Security-Policy": "default-src 'self'; base-uri 'none'; form-action 'self'; "
                                               "frame-ancestors 'none'", "X-Content-Type-Options": "nosniff",
                    "Cache-Control": "no-cache"}
TYPES = {"index.html": "text/html", "app.js": "text/javascript", "app.css": "text/css", "favicon.svg": "image/svg+xml"}
FILES = {name: (HERE / name).read_bytes() for name in TYPES}


async def index(_: web.Request) -> web.Response:
    return web.Response(body=FILES["index.html"], content_type=TYPES["index.html"], charset="utf-8",
                        headers=SECURITY_HEADERS)


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in FILES:
        raise web.HTTPNotFound()
    return web.Response(body=FILES[name], content_type=TYPES[name], charset="utf-8", headers=SECURITY_HEADERS)


async def to_index(_: web.Request) -> web.Response:
    raise web.HTTPFound("/ui/")


def add_routes(r: web.UrlDispatcher) -> None:
    """The dashboard's routes."""
    r.add_get("/ui", to_index)
    r.add_get("/ui/", index)
    r.add_get("/ui/{name}", asset)
