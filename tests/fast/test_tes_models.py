"""The TES request models are the official TES 1.1 OpenAPI's schemas, field for field: the same properties,
the same required ones, the same JSON types; and hostile values of the right shape are refused by them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from gateway.api.tes import task_to_spec
from gateway.api.tes_models import TesExecutor, TesInput, TesOutput, TesResources, TesTask
from gateway.core.errors import BadRequest

ROOT = Path(__file__).resolve().parents[2]
SPEC = next(p for p in (ROOT.parent / "shared" / "specs" / "tes-1.1.openapi.yaml",
                        ROOT / "tests" / "specs" / "tes-1.1.openapi.yaml") if p.exists())
SERVER_SET = {"id", "state", "logs", "creation_time"}  # tesTask fields the server fills in
JSON_TYPES = {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean", "array": "array",
              "object": "object"}


def _json_type(schema: dict[str, Any], components: dict[str, Any]) -> str:
    if "$ref" in schema:
        target = components[schema["$ref"].rsplit("/", 1)[-1]]
        return "object" if target.get("type") == "object" or "properties" in target else str(target.get("type"))
    if "allOf" in schema:
        return _json_type(schema["allOf"][0], components)
    return JSON_TYPES[schema["type"]]


def _model_type(field: Any) -> str:
    schema = field if isinstance(field, dict) else {}
    if "anyOf" in schema:
        schema = next(s for s in schema["anyOf"] if s.get("type") != "null")
    if "$ref" in schema or "enum" in schema:
        return "object" if "$ref" in schema and "Type" not in schema["$ref"] else "string"
    return str(schema.get("type"))


@pytest.mark.parametrize(("model", "name"), [(TesTask, "tesTask"), (TesExecutor, "tesExecutor"),
                                              (TesInput, "tesInput"), (TesOutput, "tesOutput"),
                                              (TesResources, "tesResources")])
def test_each_model_is_its_openapi_schema(model: type[pydantic.BaseModel], name: str) -> None:
    components = yaml.safe_load(SPEC.read_text())["components"]["schemas"]
    schema = components[name]
    props = {k: v for k, v in schema["properties"].items() if not (name == "tesTask" and k in SERVER_SET)}
    ours = model.model_json_schema(mode="validation")
    assert set(ours["properties"]) == set(props)
    assert set(ours.get("required", [])) == set(schema.get("required", [])) - SERVER_SET
    for key, prop in props.items():
        assert _model_type(ours["properties"][key]) == _json_type(prop, components), key


@pytest.mark.parametrize(("task", "loc"), [
    ({"executors": [{"image": "a", "command": ["x"]}], "resources": {"ram_gb": "16"}}, ["resources", "ram_gb"]),
    ({"executors": [{"image": "a", "command": ["x"]}], "resources": {"cpu_cores": True}}, ["resources", "cpu_cores"]),
    ({"executors": [{"image": "a", "command": ["x"], "env": {"A": 1}}]}, ["executors", 0, "env", "A"]),
    ({"executors": [{"image": "a", "command": []}]}, ["executors", 0, "command"]),
    ({"executors": [{"command": ["x"]}]}, ["executors", 0, "image"]),
    ({"executors": [{"image": "a", "command": ["x"]}], "outputs": [{"path": "/o"}]}, ["outputs", 0, "url"]),
    ({"executors": [{"image": "a", "command": ["x"]}], "tags": {"k": None}}, ["tags", "k"]),
    ({"executors": [{"image": "a", "command": ["x"]}], "tags": {"integrity": 5}}, ["tags", "integrity"]),
    ({"executors": [{"image": "a", "command": ["x"]}], "resources": {"ram_gb": 10 ** 400}}, ["resources", "ram_gb"]),
    ({"executors": [{"image": "a", "command": ["x"]}], "inputs": [{"path": "/i", "type": "LINK"}]},
     ["inputs", 0, "type"]),
])
def test_a_task_of_the_wrong_shape_is_a_400_naming_the_field(task: dict[str, Any], loc: list[Any]) -> None:
    with pytest.raises(BadRequest) as err:
        task_to_spec(task, "runai")
    assert err.value.errors is not None and err.value.errors[0]["loc"] == ["body", *loc]
