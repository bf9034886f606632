"""adapters.jsonslices against the json module: the same value or the same refusal, with turns for the loop."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters import jsonslices

# Every code point, NUL and lone surrogates included: json.dumps escapes them and json.loads gives them back.
TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=12)
SCALAR = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT
VALUE = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
                     max_leaves=20)
TOP = st.dictionaries(TEXT, VALUE | st.lists(VALUE, max_size=6), max_size=5) | st.lists(VALUE, max_size=6) | VALUE
LAYOUT = st.sampled_from([{}, {"indent": 2}, {"separators": (",", ":")}, {"indent": "\t", "ensure_ascii": False},
                          {"ensure_ascii": False}])


def sliced(text: str) -> Any:
    return asyncio.run(jsonslices.loads(text, small=0))


def outcome(fn: Any, text: str) -> tuple[str, Any]:
    try:
        return "value", fn(text)
    except ValueError:  # JSONDecodeError, or a RecursionError's cousin never reached at these sizes
        return "refused", None


@settings(max_examples=300, deadline=None)
@given(TOP, LAYOUT, st.sampled_from(["", " ", "\n", "\r\n\t "]))
def test_any_json_text_decodes_to_what_json_loads_gives(value: Any, layout: dict[str, Any], pad: str) -> None:
    text = pad + json.dumps(value, **layout) + pad
    assert sliced(text) == json.loads(text)


EDIT = st.sampled_from([*'[]{},:"\\ \x00\ud800\ufeff0e-.tnf', "true", "null", "1e999", "//"])


@settings(max_examples=400, deadline=None)
@given(TOP, st.data())
def test_a_damaged_text_is_refused_or_read_exactly_as_json_loads_does(value: Any, data: st.DataObject) -> None:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    at = data.draw(st.integers(0, len(text)))
    how = data.draw(st.sampled_from(["cut", "drop", "insert"]))
    if how == "cut":
        text = text[:at]
    elif how == "drop":
        text = text[:at] + text[at + 1:]
    else:
        text = text[:at] + data.draw(EDIT) + text[at:]
    assert outcome(sliced, text) == outcome(json.loads, text)


@pytest.mark.parametrize("text", ["", " ", "[", "[1,]", '{"a":1,}', '{"a" 1}', "[1 2]", '{1:2}', "[] []", "\ufeff[]",
                                  '{"workloads":[{"id":1}],"next":}', "[" * 10 + "]" * 9])
def test_known_bad_texts_are_refused_with_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        sliced(text)


async def test_a_large_body_leaves_the_loop_free_between_its_elements() -> None:
    page = {"workloads": [{"id": f"w-{i}", "name": "x" * 200, "phase": "Running"} for i in range(20_000)],
            "next": 500}
    text = json.dumps(page)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    got = await jsonslices.loads(text)
    task.cancel()
    assert got == page
    assert ticks - before > 10  # decoding ~5 MB took many slices, and the other task ran in between


async def test_a_small_body_is_decoded_in_one_go() -> None:
    assert await jsonslices.loads('{"a": [1, 2]}') == {"a": [1, 2]}
