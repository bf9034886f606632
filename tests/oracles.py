"""Independent oracles for translated payloads: Run:ai's OpenAPI schema, runapy and the Huawei SDK models."""

from __future__ import annotations

import json
import re
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from openapi_schema_validator import OAS30Validator

SPEC = Path(__file__).resolve().parent.parent.parent / "shared" / "specs" / "runai-openapi-subset.json"
PACKAGED = Path(__file__).resolve().parent.parent / "simulators" / "runai" / "openapi-subset.json"


@cache
def runai_document() -> dict[str, Any]:
    """The Run:ai OpenAPI subset (the shared copy when present, else the packaged one)."""
    path = SPEC if SPEC.exists() else PACKAGED
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def validate_runai(schema_name: str, body: dict[str, Any]) -> None:
    """Raise if `body` breaks Run:ai's schema (OpenAPI 3.0 semantics, nullable respected)."""
    doc = runai_document()
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": doc["components"]}
    OAS30Validator(schema).validate(body)


def load_runapy(schema_name: str, body: dict[str, Any]) -> Any:
    """Load `body` into runapy's model and check nothing was lost on the way."""
    from runai import models

    cls = getattr(models, schema_name)
    obj = cls.from_dict(body)
    assert obj is not None
    # model_dump, not to_dict: to_dict leaves out the fields the OpenAPI marks readOnly (a node pool's id),
    # which the model did read.
    again = obj.model_dump(by_alias=True)
    _assert_kept(_strip_none(body), again, schema_name)
    return obj


def _assert_kept(sent: Any, loaded: Any, where: str) -> None:
    """Everything sent survives the SDK model (which may add its own defaults)."""
    if isinstance(sent, dict):
        assert isinstance(loaded, dict), f"{where}: became {type(loaded).__name__}"
        for k, v in sent.items():
            assert k in loaded, f"{where}.{k}: lost by the SDK model"
            _assert_kept(v, loaded[k], f"{where}.{k}")
    elif isinstance(sent, list):
        assert isinstance(loaded, list) and len(loaded) == len(sent), f"{where}: list changed"
        for i, (a, b) in enumerate(zip(sent, loaded, strict=True)):
            _assert_kept(a, b, f"{where}[{i}]")
    elif isinstance(loaded, datetime) and isinstance(sent, str):  # a date-time field, parsed by the model
        assert datetime.fromisoformat(sent.replace("Z", "+00:00")) == loaded, f"{where}: {sent!r} became {loaded!r}"
    else:
        assert sent == loaded, f"{where}: {sent!r} became {loaded!r}"


def _strip_none(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _strip_none(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_strip_none(x) for x in v]
    return v


_LIST = re.compile(r"^list\[(.+)\]$")
_DICT = re.compile(r"^dict\(str, (.+)\)$")
_PRIMITIVES = {"str", "int", "float", "bool", "object", "date", "datetime"}


def load_huawei(type_name: str, data: Any, path: str = "") -> Any:
    """Build the huaweicloudsdkmodelarts model `type_name` from `data`; every key must be known."""
    import huaweicloudsdkmodelarts.v1 as sdk

    if type_name in _PRIMITIVES:
        return data
    if m := _LIST.match(type_name):
        assert isinstance(data, list), f"{path}: expected a list"
        return [load_huawei(m.group(1), x, f"{path}[{i}]") for i, x in enumerate(data)]
    if m := _DICT.match(type_name):
        assert isinstance(data, dict), f"{path}: expected a map"
        return {k: load_huawei(m.group(1), v, f"{path}.{k}") for k, v in data.items()}
    cls = getattr(sdk, type_name)
    assert isinstance(data, dict), f"{path}: expected an object for {type_name}"
    by_json = {json_key: attr for attr, json_key in cls.attribute_map.items()}
    kwargs = {}
    for key, value in data.items():
        assert key in by_json, f"{path}.{key}: not a field of huaweicloudsdkmodelarts {type_name}"
        attr = by_json[key]
        kwargs[attr] = load_huawei(cls.openapi_types[attr], value, f"{path}.{key}")
    return cls(**kwargs)


def check_modelarts_body(body: dict[str, Any]) -> None:
    """The create body loads into the SDK's `Job` and serializes back unchanged."""
    from huaweicloudsdkcore.utils.http_utils import sanitize_for_serialization

    job = load_huawei("Job", body, "body")
    assert _strip_none(sanitize_for_serialization(job)) == _strip_none(body)
