"""The GA4GH TES 1.1 request types (tesTask and what it holds) as pydantic models, field for field as the
official OpenAPI (../shared/specs/tes-1.1.openapi.yaml) gives them; a test compares the two. Types are strict
(a string is never read as a number), numbers finite, unknown fields left alone as the schema allows."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from gateway.core.models import LIMITS

FileType = Literal["FILE", "DIRECTORY"]
Number = Annotated[StrictFloat, Field(allow_inf_nan=False)]  # strict floats take ints too, never a string


class _Tes(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class TesInput(_Tes):
    """tesInput: a file or folder to put in the container (from `url`, or inline `content`)."""

    name: StrictStr | None = None
    description: StrictStr | None = None
    url: StrictStr | None = None
    path: StrictStr
    type: FileType | None = None
    content: StrictStr | None = None
    streamable: StrictBool | None = None


class TesOutput(_Tes):
    """tesOutput: a file or folder to copy out of the container to `url`."""

    name: StrictStr | None = None
    description: StrictStr | None = None
    url: StrictStr
    path: StrictStr
    path_prefix: StrictStr | None = None
    type: FileType | None = None


class TesExecutor(_Tes):
    """tesExecutor: one command in an image."""

    image: StrictStr = Field(..., min_length=1)
    command: list[StrictStr] = Field(..., min_length=1)
    workdir: StrictStr | None = None
    stdin: StrictStr | None = None
    stdout: StrictStr | None = None
    stderr: StrictStr | None = None
    env: dict[StrictStr, StrictStr] | None = None
    ignore_error: StrictBool | None = None


class TesResources(_Tes):
    """tesResources: what the task asks for."""

    # Bounded so that every value has a plain decimal form a vendor's memory field takes (1e308 did not).
    cpu_cores: Annotated[StrictInt, Field(ge=0, le=100_000)] | None = None
    preemptible: StrictBool | None = None
    ram_gb: Annotated[Number, Field(ge=0, le=1_000_000)] | None = None
    disk_gb: Annotated[Number, Field(ge=0, le=1_000_000_000)] | None = None
    zones: list[StrictStr] | None = None
    backend_parameters: dict[StrictStr, StrictStr] | None = None
    backend_parameters_strict: StrictBool | None = None


class TesTask(_Tes):
    """tesTask as a client sends it (the server-set id, state, logs and creation_time are ignored)."""

    name: StrictStr | None = None
    description: StrictStr | None = None
    # The gateway's limits (README "Limits"), so one tenant's task cannot cost every other one its turn.
    inputs: list[TesInput] | None = Field(None, max_length=LIMITS["tes_inputs"])
    outputs: list[TesOutput] | None = Field(None, max_length=LIMITS["tes_outputs"])
    resources: TesResources | None = None
    executors: list[TesExecutor] = Field(..., min_length=1, max_length=LIMITS["tes_executors"])
    volumes: list[StrictStr] | None = Field(None, max_length=LIMITS["tes_volumes"])
    tags: dict[StrictStr, StrictStr] | None = Field(None, max_length=LIMITS["labels"])


def first_error(err: Any) -> tuple[list[str | int], str]:
    """The location and words of a pydantic ValidationError's first error, in TES field names."""
    e = err.errors()[0]
    loc = list(e["loc"])
    msg = {"missing": "required", "too_short": "must not be empty"}.get(e["type"], e["msg"])
    return loc, msg
