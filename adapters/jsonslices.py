"""Decoding a large vendor JSON body a slice at a time, so the event loop serves requests meanwhile.

One json.loads of a 500-workload Run:ai page (about 470 KB) holds the loop for about 4 ms here; a sync
cycle over 10,000 jobs does that twenty times, and every API request waiting behind it waits that long.
"""

from __future__ import annotations

import json
import re
from typing import Any

from gateway.core.slices import Slices

SMALL = 16_384  # characters: decoded in one go (about 0.1 ms)
_DECODER = json.JSONDecoder()
_WS = re.compile(r"[ \t\n\r]*")  # JSON's whitespace, as the json module reads it


async def loads(text: str, small: int = SMALL) -> Any:
    """json.loads, giving the loop turns between the elements of the top-level arrays of a body longer
    than `small` characters."""
    if len(text) <= small:
        return json.loads(text)
    return await _Slicer(text).document()


class _Slicer:
    """A JSON text read by hand at its top level, each element of its arrays by the json module."""

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.slices = Slices()

    async def document(self) -> Any:
        self.ws()
        value = await self.value()
        self.ws()
        if self.i != len(self.s):
            raise json.JSONDecodeError("Extra data", self.s, self.i)
        return value

    async def value(self) -> Any:
        if self.s.startswith("{", self.i):
            return await self.object()
        if self.s.startswith("[", self.i):
            return await self.array()
        return self.plain()

    async def object(self) -> dict[str, Any]:
        self.i += 1
        out: dict[str, Any] = {}
        self.ws()
        if self.at("}"):
            return out
        while True:
            if not self.s.startswith('"', self.i):
                raise json.JSONDecodeError("Expecting property name enclosed in double quotes", self.s, self.i)
            key = self.plain()
            self.ws()
            self.expect(":")
            self.ws()
            out[key] = await self.array() if self.s.startswith("[", self.i) else self.plain()
            self.ws()
            if self.at("}"):
                return out
            self.expect(",")
            self.ws()

    async def array(self) -> list[Any]:
        self.i += 1
        out: list[Any] = []
        self.ws()
        if self.at("]"):
            return out
        while True:
            out.append(self.plain())
            await self.slices.turn()
            self.ws()
            if self.at("]"):
                return out
            self.expect(",")
            self.ws()

    def plain(self) -> Any:
        value, self.i = _DECODER.raw_decode(self.s, self.i)
        return value

    def ws(self) -> None:
        self.i = _WS.match(self.s, self.i).end()  # type: ignore[union-attr]  # `*` always matches

    def at(self, char: str) -> bool:
        if self.s.startswith(char, self.i):
            self.i += 1
            return True
        return False

    def expect(self, char: str) -> None:
        if not self.at(char):
            raise json.JSONDecodeError(f"Expecting {char!r} delimiter", self.s, self.i)
