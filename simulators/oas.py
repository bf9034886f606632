"""A small OpenAPI 3.0 schema checker for the simulators' request validation.

It covers what the Run:ai subset uses: $ref, allOf, type, nullable, properties, required, items,
enum, minimum/maximum, minLength/maxLength, pattern. Unknown properties of an object whose
schema lists properties are reported too: they catch translator typos before a vendor would.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

Issue = tuple[str, str]  # (field path, message)

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "object": (dict,), "array": (list,),
}


@cache
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


class SchemaChecker:
    """Validates JSON values against component schemas of one OpenAPI document."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})

    def enum(self, name: str) -> tuple[str, ...]:
        """The allowed values of an enum component schema."""
        return tuple(self.resolve(self.schemas[name]).get("enum") or ())

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        """Follow $ref to the referenced schema."""
        while "$ref" in schema:
            schema = self.schemas[schema["$ref"].rsplit("/", 1)[-1]]
        return schema

    def _props(self, schema: dict[str, Any]) -> tuple[dict[str, Any], set[str], bool]:
        """Properties and required names across allOf branches; bool: any properties declared."""
        schema = self.resolve(schema)
        props: dict[str, Any] = dict(schema.get("properties") or {})
        required = set(schema.get("required") or [])
        declared = "properties" in schema
        for branch in schema.get("allOf") or []:
            p, r, d = self._props(branch)
            props.update(p)
            required |= r
            declared = declared or d
        return props, required, declared

    def _nullable(self, schema: dict[str, Any]) -> bool:
        schema = self.resolve(schema)
        if schema.get("nullable"):
            return True
        return any(self._nullable(b) for b in schema.get("allOf") or [])

    def check(self, name: str, value: Any) -> list[Issue]:
        """Issues of `value` against component schema `name`."""
        return self._check({"$ref": f"#/components/schemas/{name}"}, value, "")

    def _check(self, schema: dict[str, Any], value: Any, path: str) -> list[Issue]:
        schema = self.resolve(schema)
        where = path or "(body)"
        if value is None:
            return [] if self._nullable(schema) else [(where, "must not be null")]
        issues: list[Issue] = []
        for branch in schema.get("allOf") or []:
            b = self.resolve(branch)
            if b.get("type") == "object" or "properties" in b or "allOf" in b:
                continue  # object branches are merged below
            issues += self._check(b, value, path)
        typ = schema.get("type")
        props, required, declared = self._props(schema)
        if typ is None and declared:
            typ = "object"
        if typ:
            ok = isinstance(value, _TYPES[typ]) and not (typ in ("integer", "number") and isinstance(value, bool))
            if typ == "integer" and isinstance(value, float) and value.is_integer():
                ok = True
            if not ok:
                return [*issues, (where, f"must be of type {typ}")]
        if "enum" in schema and value not in schema["enum"]:
            issues.append((where, f"must be one of {schema['enum']}"))
        if isinstance(value, str):
            if len(value) < schema.get("minLength", 0):
                issues.append((where, f"must be at least {schema['minLength']} characters"))
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                issues.append((where, f"must be at most {schema['maxLength']} characters"))
            if "pattern" in schema and not _regex(schema["pattern"]).search(value):
                issues.append((where, f"must match {schema['pattern']}"))
        if isinstance(value, int | float) and not isinstance(value, bool):
            if "minimum" in schema and value < schema["minimum"]:
                issues.append((where, f"must be >= {schema['minimum']}"))
            if "maximum" in schema and value > schema["maximum"]:
                issues.append((where, f"must be <= {schema['maximum']}"))
        if isinstance(value, list) and "items" in schema:
            for i, item in enumerate(value):
                issues += self._check(schema["items"], item, f"{path}[{i}]")
        if isinstance(value, dict) and declared:
            for req in sorted(required - set(value)):
                issues.append((f"{path}.{req}" if path else req, "is required"))
            for k, v in value.items():
                sub = f"{path}.{k}" if path else k
                if k in props:
                    issues += self._check(props[k], v, sub)
                elif schema.get("additionalProperties") is None:
                    issues.append((sub, "is not a known field"))
        return issues
