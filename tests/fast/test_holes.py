"""Regression tests for holes an outside attack found (issue 29): names that end in a newline."""

from __future__ import annotations

import pytest

from gateway.core.errors import ValidationError
from gateway.core.models import parse_spec


@pytest.mark.parametrize("field,value,loc", [
    ("env", {"TOKEN\n": "x"}, "env"),
    ("labels", {"team\n": "ml"}, "labels"),
])
def test_a_name_with_a_trailing_newline_is_refused_naming_the_field(field: str, value: dict[str, str],
                                                                   loc: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_spec({"name": "n", "backend": "runai", "image": "x", field: value})
    assert err.value.errors[0]["loc"][0] == loc


def test_the_same_names_without_the_newline_pass() -> None:
    spec = parse_spec({"name": "n", "backend": "runai", "image": "x", "env": {"TOKEN": "x"},
                       "labels": {"team": "ml"}})
    assert spec.env == {"TOKEN": "x"} and spec.labels == {"team": "ml"}
