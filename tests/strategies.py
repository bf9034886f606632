"""Hypothesis strategies for valid JobSpecs that both vendors can run."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from mappings import flavors, gpu_types

NAME = st.from_regex(r"\A[a-z]([-a-z0-9]{0,40}[a-z0-9])?\Z")
TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FFF, exclude_characters="\x7f"), max_size=20)
ARG = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12)
ENV_KEY = st.from_regex(r"\A[A-Z_][A-Z0-9_]{0,15}\Z")
LABEL_KEY = st.from_regex(r"\A[a-z][a-z0-9]{0,10}\Z")
PATH = st.from_regex(r"\A/[a-z][a-z0-9/_-]{0,20}\Z")


def _runai_capable(gpu_type: str | None) -> bool:
    return gpu_type is None or bool(gpu_types().get(gpu_type, {}).get("runai_node_pools"))


@st.composite
def resources(draw: st.DrawFn) -> dict[str, Any]:
    """Resources some ModelArts flavor satisfies and Run:ai can place."""
    fl = draw(st.sampled_from([f for f in flavors() if _runai_capable(f.gpu_type)]))
    out: dict[str, Any] = {}
    if fl.gpus:
        gpus: float = fl.gpus
        if fl.gpus == 1 and draw(st.booleans()):
            gpus = draw(st.sampled_from([0.25, 0.5, 0.75]))
        out["gpus"] = gpus
        if draw(st.booleans()):
            out["gpu_type"] = fl.gpu_type
    elif draw(st.booleans()):
        out["gpus"] = 0
    if draw(st.booleans()):
        out["cpu"] = draw(st.integers(1, int(fl.cpu)))
    if draw(st.booleans()):
        out["memory"] = f"{draw(st.integers(1, int(fl.memory_gi)))}Gi"
    if draw(st.booleans()):
        out["nodes"] = draw(st.integers(1, 8))
    return out


@st.composite
def mount(draw: st.DrawFn, kind: str, i: int) -> dict[str, Any]:
    scheme = draw(st.sampled_from(["pvc", "nfs", "s3", "obs"]))
    host = draw(st.from_regex(r"\A[a-z][a-z0-9-]{0,10}[a-z0-9]\Z"))
    sub = draw(st.from_regex(r"\A(/[a-z0-9_-]{1,8}){0,3}\Z"))
    if scheme == "nfs" and not sub:
        sub = "/export"
    m: dict[str, Any] = {"name": f"{kind[:-1]}{i}", "uri": f"{scheme}://{host}{sub}"}
    if draw(st.booleans()):
        m["path"] = draw(PATH)
    if draw(st.booleans()):
        m["read_only"] = draw(st.booleans())
    return m


@st.composite
def job_specs(draw: st.DrawFn, backend: str = "runai") -> dict[str, Any]:
    """A valid JobSpec dict."""
    spec: dict[str, Any] = {"name": draw(NAME), "backend": backend,
                            "image": draw(st.from_regex(r"\A[a-z][a-z0-9./:-]{0,30}\Z"))}
    if draw(st.booleans()):
        spec["project"] = draw(st.from_regex(r"\A[0-9]{1,4}\Z"))
    if draw(st.booleans()):
        spec["command"] = draw(st.lists(ARG, min_size=1, max_size=4))
    if draw(st.booleans()):
        spec["args"] = draw(st.lists(ARG, min_size=1, max_size=4))
    if draw(st.booleans()):
        spec["working_dir"] = draw(PATH)
    if draw(st.booleans()):
        spec["env"] = draw(st.dictionaries(ENV_KEY, TEXT, max_size=4))
    if draw(st.booleans()):
        spec["resources"] = draw(resources())
        if spec["resources"].get("nodes", 1) > 1:
            spec["distributed"] = {"framework": draw(st.sampled_from(["pytorch", "tf", "mpi", "xgboost", "jax"]))}
    if draw(st.booleans()):
        spec["inputs"] = [draw(mount("inputs", i)) for i in range(draw(st.integers(0, 3)))]
    if draw(st.booleans()):
        spec["outputs"] = [draw(mount("outputs", i)) for i in range(draw(st.integers(0, 2)))]
    if draw(st.booleans()):
        spec["labels"] = draw(st.dictionaries(LABEL_KEY, st.from_regex(r"\A[a-z0-9]{0,10}\Z"), max_size=3))
    if draw(st.booleans()):
        spec["priority"] = draw(st.sampled_from(["low", "normal", "high"]))
    if draw(st.booleans()):
        spec["preemptible"] = draw(st.booleans())
    if draw(st.booleans()):
        spec["max_retries"] = draw(st.integers(0, 10))
    if draw(st.booleans()):
        spec["max_runtime_seconds"] = draw(st.integers(1, 10**6))
    return spec
