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


@pytest.mark.parametrize("project", ["1 ", " 1", "1,2", "1\n", "a b", "1;2", ""])
def test_a_runai_project_the_lookup_cannot_match_is_refused_naming_it(project: str) -> None:
    from adapters.runai.translate import translate
    from tests.conftest import base_config

    cfg = base_config()
    spec = parse_spec({"name": "n", "backend": "runai", "image": "x", "project": project} if project else
                      {"name": "n", "backend": "runai", "image": "x"})
    backend = cfg.backend("runai").model_copy(update={"default_project": project or None})
    with pytest.raises(ValidationError) as err:
        translate(spec, backend, "01a236d358ed2edd77d5f866a4072e92")  # type: ignore[arg-type]
    assert err.value.errors[0]["loc"] == ["project"]


@pytest.mark.parametrize("project", ["1", "33", "575c19e8-c7c3-45b0-8290-2f47397a8383"])
def test_runai_project_ids_as_the_vendor_makes_them_pass(project: str) -> None:
    from adapters.runai.translate import translate
    from tests.conftest import base_config

    tr = translate(parse_spec({"name": "n", "backend": "runai", "image": "x", "project": project}),
                   base_config().backend("runai"), "01a236d358ed2edd77d5f866a4072e92")  # type: ignore[arg-type]
    assert tr.body["projectId"] == project


def test_a_filter_value_run_ai_cannot_express_is_never_sent() -> None:
    from adapters.runai.client import filter_expr

    assert filter_expr("projectId", "==", "33") == "projectId==33"
    for bad in ("1,2", "1 ", "", "a\nb"):
        with pytest.raises(ValidationError):
            filter_expr("projectId", "==", bad)


def test_a_config_default_project_the_lookup_cannot_match_is_refused() -> None:
    from tests.conftest import base_config

    cfg = base_config()
    raw = cfg.backend("runai").model_dump(mode="json")
    from adapters.runai.config import RunaiConfig

    with pytest.raises(Exception, match="project id"):
        RunaiConfig.model_validate({**raw, "default_project": "1,2"})
