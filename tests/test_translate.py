"""Translators: every example and generated spec yields payloads the vendors' own schemas and SDKs accept."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from adapters.registry import load as load_vendors
from gateway.core.config import Config
from gateway.core.errors import ValidationError
from gateway.core.models import parse_spec
from gateway.core.translation import enforce_strict, spec_fields, vendor_name
from tests.conftest import EXAMPLES
from tests.oracles import check_modelarts_body, load_huawei, load_runapy, validate_runai
from tests.strategies import job_specs

JOB_ID = "019a0000000000aa11bb22cc33dd44ee"


def check_runai(body: dict[str, Any], path: str) -> None:
    schema = {"distributed": "DistributedCreationRequest", "inferences": "InferenceCreationRequest"}.get(
        path.rsplit("/", 1)[-1], "TrainingCreationRequest")
    validate_runai(schema, body)
    load_runapy(schema, body)


def check_report(raw: dict[str, Any], report: list[Any]) -> None:
    spec = parse_spec(raw)
    fields = [e.field for e in report if e.field in spec_fields(spec)]
    assert sorted(fields) == sorted(spec_fields(spec)), "every set field gets exactly one outcome"
    assert len(fields) == len(set(fields))
    for e in report:
        if e.outcome == "dropped":
            assert e.detail, f"{e.field} dropped without a reason"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
@pytest.mark.parametrize("backend", ["runai", "modelarts"])
def test_examples_translate_and_pass_vendor_oracles(path: Any, backend: str, config: Config) -> None:
    raw = yaml.safe_load(path.read_text())
    if path.stem == "modelarts-ascend" and backend == "runai":
        # Ascend exists only on ModelArts: the answer is a clean 422 naming the field.
        raw["backend"] = backend
        with pytest.raises(ValidationError) as err:
            load_vendors().translate(parse_spec(raw), config.backend(backend), JOB_ID)
        assert err.value.errors and err.value.errors[0]["loc"] == ["resources", "gpu_type"]
        return
    raw["backend"] = backend
    tr = load_vendors().translate(parse_spec(raw), config.backend(backend), JOB_ID)
    if backend == "runai":
        check_runai(tr.body, tr.path)
    elif raw.get("kind") == "inference":
        assert tr.path == "/v2/0123456789abcdef0123456789abcdef/services" and tr.kind == "service"
        load_huawei("ServiceCreateRequest", tr.body, "body")  # every key known to the SDK's request model
    else:
        assert tr.path == "/v2/0123456789abcdef0123456789abcdef/training-jobs"
        check_modelarts_body(tr.body)
    check_report(raw, tr.report)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=job_specs("runai"))
def test_generated_specs_translate_for_runai(raw: dict[str, Any]) -> None:
    from tests.conftest import base_config

    cfg = base_config()
    tr = load_vendors().translate(parse_spec(raw), cfg.backend("runai"), JOB_ID)
    check_runai(tr.body, tr.path)
    check_report(raw, tr.report)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=job_specs("modelarts"))
def test_generated_specs_translate_for_modelarts(raw: dict[str, Any]) -> None:
    from tests.conftest import base_config

    cfg = base_config()
    tr = load_vendors().translate(parse_spec(raw), cfg.backend("modelarts"), JOB_ID)
    check_modelarts_body(tr.body)
    check_report(raw, tr.report)


def spec(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "job", "backend": "runai", "image": "python:3.11"}
    base.update(kw)
    return base


def body_for(config: Config, backend: str, **kw: Any) -> dict[str, Any]:
    return load_vendors().translate(parse_spec(spec(backend=backend, **kw)), config.backend(backend), JOB_ID).body


def test_runai_fractional_gpu_is_a_portion(config: Config) -> None:
    compute = body_for(config, "runai", resources={"gpus": 0.5})["spec"]["compute"]
    assert compute == {"gpuDevicesRequest": 1, "gpuRequestType": "portion", "gpuPortionRequest": 0.5}


def test_runai_command_and_args_are_shell_quoted(config: Config) -> None:
    s = body_for(config, "runai", command=["python", "-c", "print('a b')"], args=["--x", "1 2"])["spec"]
    assert s["command"] == "python -c 'print('\"'\"'a b'\"'\"')'"
    assert s["args"] == "--x '1 2'"


def test_runai_distributed_uses_workers_and_framework(config: Config) -> None:
    tr = load_vendors().translate(parse_spec(spec(resources={"nodes": 4, "gpus": 8}, distributed={"framework": "pytorch"})),
                        config.backend("runai"), JOB_ID)
    assert tr.path == "/api/v1/workloads/distributed"
    assert tr.body["spec"]["distributedFramework"] == "PyTorch"
    assert tr.body["spec"]["numWorkers"] == 3
    assert tr.body["masterSpecSameAsWorker"] is True


def test_runai_maps_the_rest(config: Config) -> None:
    b = body_for(config, "runai", project="7", env={"A": "1"}, labels={"team": "x"}, priority="high",
                 preemptible=False, max_retries=4, working_dir="/w",
                 resources={"gpu_type": "a100", "cpu": 4, "memory": "16Gi"},
                 inputs=[{"name": "d", "uri": "nfs://srv/export/data", "path": "/data"}])
    s = b["spec"]
    assert b["projectId"] == "7" and b["clusterId"] == "71f69d83-ba66-4822-adf5-55ce55efd210"
    assert s["environmentVariables"] == [{"name": "A", "value": "1"}]
    assert s["labels"] == [{"name": "team", "value": "x"}]
    assert (s["priorityClass"], s["preemptibility"], s["backoffLimit"]) == ("high", "non-preemptible", 4)
    assert s["nodePools"] == ["a100"] and s["workingDir"] == "/w"
    assert s["compute"] == {"cpuCoreRequest": 4, "cpuMemoryRequest": "16Gi"}
    assert s["storage"]["nfs"] == [{"name": "d", "server": "srv", "path": "/export/data", "mountPath": "/data",
                                    "readOnly": True}]


def test_obs_on_runai_is_s3_and_approximated(config: Config) -> None:
    tr = load_vendors().translate(parse_spec(spec(inputs=[{"name": "d", "uri": "obs://bkt"}])), config.backend("runai"),
                        JOB_ID)
    assert tr.body["spec"]["storage"]["s3"][0]["bucket"] == "bkt"
    entry = next(e for e in tr.report if e.field == "inputs[0]")
    assert entry.outcome == "approximated" and "OBS" in entry.detail


def test_modelarts_flavor_from_table_and_no_match_is_422(config: Config) -> None:
    b = body_for(config, "modelarts", resources={"gpus": 4, "gpu_type": "V100"})
    assert b["spec"]["resource"] == {"node_count": 1, "flavor_id": "modelarts.p3.4xlarge.ex"}
    with pytest.raises(ValidationError) as err:
        body_for(config, "modelarts", resources={"gpus": 3, "gpu_type": "V100"})
    assert err.value.errors and err.value.errors[0]["loc"] == ["resources"]


def test_modelarts_maps_data_env_and_policy(config: Config) -> None:
    b = body_for(config, "modelarts", env={"K": "v"}, priority="low", preemptible=True, max_runtime_seconds=3600,
                 command=["python", "t.py"], args=["--lr", "0.1"],
                 inputs=[{"name": "i", "uri": "obs://b/p/q"}, {"name": "n", "uri": "nfs://s/e", "path": "/n"}],
                 outputs=[{"name": "o", "uri": "obs://b/out", "path": "/out"}])
    assert b["algorithm"]["command"] == "python t.py --lr 0.1"
    assert b["algorithm"]["environments"] == {"K": "v"}
    assert b["algorithm"]["inputs"] == [{"name": "i", "local_dir": "/mnt/inputs/i",
                                         "remote": {"obs": {"obs_url": "/b/p/q/"}}}]
    assert b["algorithm"]["outputs"][0]["remote"]["obs"]["obs_url"] == "/b/out/"
    assert b["spec"]["volumes"] == [{"nfs": {"nfs_server_path": "s:/e", "local_path": "/n", "read_only": True}}]
    assert b["spec"]["schedule_policy"] == {"priority": 1, "preemptible": True}
    assert b["spec"]["auto_stop"] == {"time_unit": "HOURS", "duration": 1}


def test_modelarts_drops_what_it_cannot_mount_and_strict_refuses(config: Config) -> None:
    tr = load_vendors().translate(parse_spec(spec(backend="modelarts", inputs=[{"name": "d", "uri": "s3://bkt/x"}],
                                        labels={"a": "b"})), config.backend("modelarts"), JOB_ID)
    dropped = {e.field for e in tr.report if e.outcome == "dropped"}
    assert dropped == {"inputs[0]", "labels"}
    assert "inputs" not in tr.body["algorithm"]
    with pytest.raises(ValidationError) as err:
        enforce_strict(tr.report)
    assert {tuple(e["loc"]) for e in err.value.errors or []} == {("inputs", "0"), ("labels",)}


def test_storage_rule_rewrites_pvc_to_obs_for_modelarts(config: Config) -> None:
    tr = load_vendors().translate(parse_spec(spec(backend="modelarts", outputs=[{"name": "c", "uri": "pvc://ckpt/run1"}])),
                        config.backend("modelarts"), JOB_ID)
    assert tr.body["algorithm"]["outputs"][0]["remote"]["obs"]["obs_url"] == "/ckpt-bucket/run1/"
    assert next(e for e in tr.report if e.field == "outputs[0]").outcome == "approximated"


def test_extensions_are_deep_merged_last(config: Config) -> None:
    tr = load_vendors().translate(parse_spec(spec(extensions={"runai": {"spec": {"tty": True, "image": "override:1"}},
                                                    "modelarts": {"x": 1}})), config.backend("runai"), JOB_ID)
    assert tr.body["spec"]["tty"] is True and tr.body["spec"]["image"] == "override:1"
    outcomes = {e.field: e.outcome for e in tr.report}
    assert outcomes["extensions.runai"] == "passthrough"
    assert outcomes["extensions.modelarts"] == "dropped"


def test_unknown_gpu_type_names_the_field(config: Config) -> None:
    with pytest.raises(ValidationError) as err:
        body_for(config, "runai", resources={"gpu_type": "K9000"})
    assert err.value.errors and err.value.errors[0]["loc"] == ["resources", "gpu_type"]


def test_vendor_name_is_deterministic_and_valid() -> None:
    n = vendor_name("a" * 63, JOB_ID)
    assert len(n) <= 63 and n.endswith("-33dd44ee") and n == vendor_name("a" * 63, JOB_ID)
    assert vendor_name("x-", JOB_ID) == "x-33dd44ee"
