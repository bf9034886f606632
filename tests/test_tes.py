"""GA4GH TES 1.1 facade: py-tes (the real client) against a live gateway on both backends, the mapping,
and every TES answer against the official TES OpenAPI (schemathesis)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, settings

from gateway.api.app import create_app
from gateway.api.tes import task_to_spec, tes_state
from gateway.core.errors import BadRequest
from tests.conftest import AppThread, eventually, gateway_config
from tests.gwkit import ALPHA, BETA, GW, start_gateway
from tests.test_sync import Receiver

tes = pytest.importorskip("tes")  # py-tes, a test dependency: `pip install -e '.[test]'`

ROOT = Path(__file__).resolve().parent.parent
# The official GA4GH TES 1.1 OpenAPI (Apache-2.0, ga4gh/task-execution-schemas tag v1.1): the shared copy
# beside the checkout, else the same file kept in tests/specs for a clone without it.
TES_SPEC = next(p for p in (ROOT.parent / "shared" / "specs" / "tes-1.1.openapi.yaml",
                            ROOT / "tests" / "specs" / "tes-1.1.openapi.yaml") if p.exists())
# The TES document takes Service and ServiceType from GA4GH service-info v1.0.0 by URL; there is no network
# here, so those two schemas are written out (required fields as that specification lists them).
SERVICE = {"type": "object", "required": ["id", "name", "type", "organization", "version"], "properties": {
    "id": {"type": "string"}, "name": {"type": "string"}, "type": {"$ref": "#/components/schemas/ServiceType"},
    "description": {"type": "string"}, "contactUrl": {"type": "string"}, "documentationUrl": {"type": "string"},
    "createdAt": {"type": "string"}, "updatedAt": {"type": "string"}, "environment": {"type": "string"},
    "version": {"type": "string"}, "organization": {"type": "object", "required": ["name", "url"], "properties": {
        "name": {"type": "string"}, "url": {"type": "string"}}}}}
SERVICE_TYPE = {"type": "object", "required": ["group", "artifact", "version"], "properties": {
    "group": {"type": "string"}, "artifact": {"type": "string"}, "version": {"type": "string"}}}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppThread]:
    db = tmp_path_factory.mktemp("tes") / "tjg.db"
    cfg = gateway_config(f"sqlite+aiosqlite:///{db}", tenant_extra={"beta": {"default_backend": "modelarts"}})
    with AppThread(lambda: create_app(cfg)) as gw:
        yield gw


def client(gw: AppThread, key: str = "alpha-key-123") -> Any:
    return tes.HTTPClient(gw.url, token=key, timeout=30)


def task(backend: str, name: str, *executors: dict[str, Any], **kw: Any) -> Any:
    exs = [tes.Executor(**e) for e in executors] or [tes.Executor(image="alpine:3", command=["echo", "hi"],
                                                                  env={"SIM_RUN_SECONDS": "1"})]
    return tes.Task(name=name, executors=exs,
                    resources=tes.Resources(cpu_cores=1, backend_parameters={"backend": backend}), **kw)


def wait_state(c: Any, task_id: str, want: set[str], within: float = 30) -> Any:
    deadline = time.monotonic() + within
    while True:
        t = c.get_task(task_id, "BASIC")
        if t.state in want or time.monotonic() > deadline:
            return t
        time.sleep(0.1)


@pytest.mark.parametrize("backend", ["runai", "modelarts"])
def test_py_tes_creates_gets_lists_and_cancels(live: AppThread, backend: str) -> None:
    c = client(live)
    info = c.get_service_info()
    assert info.type["artifact"] == "tes" and "backend" in info.tes_resources_backend_parameters
    done = c.create_task(task(backend, f"Done on {backend}", tags={"suite": "tes", "backend": backend}))
    minimal = c.get_task(done, "MINIMAL")
    assert minimal.id == done and minimal.state and minimal.name is None and minimal.logs is None
    basic = c.get_task(done, "BASIC")
    assert basic.name == f"Done on {backend}" and basic.executors[0].command == ["echo", "hi"]
    assert basic.tags == {"suite": "tes", "backend": backend}
    final = wait_state(c, done, {"COMPLETE"})
    assert final.state == "COMPLETE"
    full = c.get_task(done, "FULL")
    log = full.logs[0]
    assert log.end_time is not None and log.logs[0].exit_code == 0 and log.metadata["backend"] == backend
    if backend == "modelarts":
        assert "job phase Completed" in log.logs[0].stdout  # the ModelArts log preview
    else:
        assert any("no log endpoint" in s for s in log.system_logs)

    hang = c.create_task(task(backend, "to-cancel", {"image": "alpine:3", "command": ["sleep", "1d"],
                                                     "env": {"SIM_OUTCOME": "hang"}}))
    assert wait_state(c, hang, {"RUNNING"}).state == "RUNNING"
    c.cancel_task(hang)
    assert wait_state(c, hang, {"CANCELED"}).state == "CANCELED"
    c.cancel_task(hang)  # cancelling an ended task changes nothing

    page1 = c.list_tasks(view="MINIMAL", page_size=1)
    assert len(page1.tasks) == 1 and page1.next_page_token
    page2 = c.list_tasks(view="BASIC", page_size=1, page_token=page1.next_page_token)
    assert len(page2.tasks) == 1 and page2.tasks[0].id != page1.tasks[0].id


def _list(c: Any, **params: Any) -> Any:
    """GET /tasks with filters, through py-tes's own request and model code (its list_tasks has no filters)."""
    from tes.client import append_suffixes_to_url, send_request
    from tes.models import ListTasksResponse
    from tes.utils import unmarshal

    kwargs = c._request_params(params=params)
    r = send_request(append_suffixes_to_url(c.urls, ["/tasks"]), kwargs_requests=kwargs)
    return unmarshal(r.json(), ListTasksResponse)


def test_list_filters_by_name_state_and_tags(live: AppThread) -> None:
    c = client(live)
    ids = [c.create_task(task("runai", f"filter-me-{i}", tags={"batch": "f1", "idx": str(i)})) for i in range(3)]
    other = c.create_task(task("runai", "unrelated", tags={"batch": "f2"}))
    for i in [*ids, other]:
        wait_state(c, i, {"COMPLETE"})
    got = _list(c, name_prefix="filter-me", view="BASIC")
    assert {t.id for t in got.tasks} == set(ids)
    assert {t.id for t in _list(c, tag_key="batch", tag_value="f1").tasks} == set(ids)
    assert {t.id for t in _list(c, tag_key=["batch", "idx"], tag_value=["f1", "2"]).tasks} == {ids[2]}
    keyed = {t.id for t in _list(c, tag_key="idx").tasks}
    assert set(ids) <= keyed and other not in keyed
    assert set(ids) <= {t.id for t in _list(c, state="COMPLETE", name_prefix="filter").tasks}
    assert _list(c, state="EXECUTOR_ERROR", name_prefix="filter").tasks == []


@pytest.mark.parametrize("backend", ["runai", "modelarts"])
def test_name_prefix_is_case_sensitive_and_tags_are_exact(live: AppThread, backend: str) -> None:
    """Issue 30: name_prefix matched ignoring case and punctuation, and unnamed tasks; tags were filtered as
    labels, so keys with spaces and values over 63 characters never matched."""
    c = client(live)
    long = "v" * 100
    tags = {"team name": f"t-{backend}", "long": long}
    upper = c.create_task(task(backend, f"Case.Run {backend}", tags=tags))
    lower = c.create_task(task(backend, f"case-run-{backend}", tags={"team name": f"other-{backend}"}))
    unnamed = c.create_task(tes.Task(executors=[tes.Executor(image="alpine:3", command=["true"])],
                                     tags={"team name": f"t-{backend}"},
                                     resources=tes.Resources(backend_parameters={"backend": backend})))
    assert {t.id for t in _list(c, name_prefix="Case.Run").tasks} >= {upper}
    assert lower not in {t.id for t in _list(c, name_prefix="Case.Run").tasks}
    assert upper not in {t.id for t in _list(c, name_prefix="case").tasks}
    assert lower in {t.id for t in _list(c, name_prefix="case-run").tasks}
    assert {t.id for t in _list(c, name_prefix=f"Case.Run {backend}").tasks} == {upper}
    for prefix in ("tes", "t", "-", "%", "_"):  # (an unnamed task has no name to match; LIKE's wildcards are text)
        assert unnamed not in {t.id for t in _list(c, name_prefix=prefix).tasks}
    assert {t.id for t in _list(c, tag_key="team name", tag_value=f"t-{backend}").tasks} == {upper, unnamed}
    assert {t.id for t in _list(c, tag_key=["team name", "long"], tag_value=[f"t-{backend}", long]).tasks} == {upper}
    assert _list(c, tag_key="long", tag_value=long[:-1]).tasks == []  # exact, not a prefix
    assert {t.id for t in _list(c, tag_key="team name").tasks} >= {upper, lower, unnamed}
    got = c.get_task(upper, view="BASIC")
    assert got.tags == tags and got.name == f"Case.Run {backend}"


def _tes_task_schema() -> Any:
    """The official tesTask schema, its references resolvable (jsonschema knows no OpenAPI `nullable`: a null
    where the schema says string fails, as it should)."""
    doc = yaml.safe_load(TES_SPEC.read_text())
    return {**doc["components"]["schemas"]["tesTask"], "components": doc["components"]}


@pytest.mark.parametrize("backend", ["runai", "modelarts"])
def test_backend_parameters_nulls_and_128_kib_of_inline_content(live: AppThread, backend: str) -> None:
    """Issue 30: backend_parameters keys are case-insensitive and unsupported ones are neither stored nor
    returned (strict refuses them); explicit nulls are not echoed; inline content takes 128 KiB."""
    import jsonschema

    url, auth = live.url + "/ga4gh/tes/v1", {"Authorization": "Bearer alpha-key-123"}
    big = "x" * (128 * 1024)
    body = {"name": f"params-{backend}", "description": None, "volumes": None, "tags": None,
            "inputs": [{"path": "/data/big.txt", "content": big, "url": None, "type": "FILE"}],
            "resources": {"backend_parameters": {"Backend": backend, "VmSize": "Standard_D64_v3"}, "cpu_cores": None},
            "executors": [{"image": "alpine:3", "command": ["wc", "-c", "/data/big.txt"], "env": None}]}
    r = requests.post(url + "/tasks", json=body, headers=auth, timeout=30)
    assert r.status_code == 200, r.text
    tid = r.json()["id"]
    got = requests.get(f"{url}/tasks/{tid}", params={"view": "FULL"}, headers=auth, timeout=30).json()
    jsonschema.validate(got, _tes_task_schema())
    assert got["resources"]["backend_parameters"] == {"Backend": backend}
    assert "description" not in got and "volumes" not in got and got["inputs"][0]["content"] == big
    assert requests.get(f"{live.url}/v1/jobs/{tid}", headers=auth, timeout=30).json()["backend"] == backend
    strict = {**body, "resources": {"backend_parameters": {"vmsize": "x"}, "backend_parameters_strict": True}}
    r = requests.post(url + "/tasks", json=strict, headers=auth, timeout=30)
    assert r.status_code == 400 and r.json()["errors"][0]["loc"] == ["body", "resources", "backend_parameters", "vmsize"]
    over = {**body, "inputs": [{"path": "/data/big.txt", "content": big + "y"}]}
    r = requests.post(url + "/tasks", json=over, headers=auth, timeout=30)
    assert r.status_code == 400 and r.json()["errors"][0]["loc"] == ["body", "inputs", 0, "content"]


@pytest.mark.parametrize("backend", ["runai", "modelarts"])
def test_two_executors_complete_and_a_failing_one_is_an_executor_error(live: AppThread, backend: str) -> None:
    c = client(live)
    two = c.create_task(task(backend, "two-steps",
                             {"image": "python:3.11", "command": ["python", "-c", "print(1)"], "workdir": "/work",
                              "stdout": "/work/one.txt", "env": {"SIM_RUN_SECONDS": "1", "STEP": "1"}},
                             {"image": "python:3.11", "command": ["sh", "-c", "cat /work/one.txt"],
                              "ignore_error": True, "env": {"SIM_RUN_SECONDS": "1", "STEP": "2"}},
                             volumes=["/work"]))
    assert wait_state(c, two, {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR"}).state == "COMPLETE"
    failing = c.create_task(task(backend, "fails", {"image": "alpine:3", "command": ["false"],
                                                    "env": {"SIM_OUTCOME": "failed", "SIM_EXIT_CODE": "3",
                                                            "SIM_RUN_SECONDS": "1"}}))
    final = wait_state(c, failing, {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR"})
    assert final.state == "EXECUTOR_ERROR"
    assert c.get_task(failing, "FULL").logs[0].logs[0].exit_code == 3


# -- executors and files: the entry script under a real shell, then through both backends ----------------------
STAGED = {"name": "staged", "executors": [
    {"image": "alpine:3", "command": ["sh", "-c", "cat $W/in.txt > $W/out.txt; mkdir -p $W/d/e; echo a > $W/d/e/f"]},
    {"image": "alpine:3", "command": ["sh", "-c", "exit 3"], "ignore_error": True},
    {"image": "alpine:3", "command": ["sh", "-c", "echo 1 > $W/r1.csv; echo 22 > $W/r2.csv; echo said"]}],
    "outputs": [{"url": "s3://b/res/renamed.txt", "path": "$W/out.txt"},
                {"url": "s3://b/tree", "path": "$W/d", "type": "DIRECTORY"},
                {"url": "s3://b/csv", "path": "$W/r*.csv", "path_prefix": "$W"}]}


def staged_task(work: Path) -> dict[str, Any]:
    """STAGED with its work folder at `work`, an inline input and a file and a directory from storage."""
    doc = json.loads(json.dumps(STAGED).replace("$W", str(work)))
    for ex in doc["executors"]:
        ex["env"] = {"W": str(work)}
    doc["inputs"] = [{"path": f"{work}/inline.txt", "content": "inline"},
                     {"url": "s3://b/data/in.txt", "path": f"{work}/in.txt"},
                     {"url": "s3://b/dir", "path": f"{work}/indir", "type": "DIRECTORY"}]
    return doc


def run_script(tmp: Path, doc: dict[str, Any], whole_bucket: bool) -> subprocess.CompletedProcess[str]:
    """The task's entry script run by /bin/sh, its storage mounts being folders under `tmp`: each holds its
    URL's data at the top (a folder mount) or below the URL's path (a bucket mounted whole, as on Run:ai)."""
    import gateway.api.tes as tes_api

    stage = tmp / "stage"
    old, tes_api.STAGE = tes_api.STAGE, str(stage)
    try:
        spec, _ = task_to_spec(doc, "runai")
    finally:
        tes_api.STAGE = old
    env = {k: v for k, v in os.environ.items() if not k.startswith("TJG_SUBPATH_")}
    for m in spec.get("inputs", []) + spec.get("outputs", []):
        sub = m["uri"].split("://", 1)[1].partition("/")[2]
        if whole_bucket and sub:
            env[f"TJG_SUBPATH_{m['name'].upper()}"] = sub

    def lay(m: dict[str, Any]) -> Path:
        return Path(m["path"]) / (m["uri"].split("://", 1)[1].partition("/")[2] if whole_bucket else "")

    by_name = {m["name"]: m for m in spec.get("inputs", [])}
    if "in1" in by_name:
        (lay(by_name["in1"])).mkdir(parents=True)
        (lay(by_name["in1"]) / "in.txt").write_text("from storage\n")
        (lay(by_name["in2"]) / "x").mkdir(parents=True)
        (lay(by_name["in2"]) / "x" / "y").write_text("deep\n")
    return subprocess.run(["/bin/sh", "-c", spec["command"][2]], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("whole_bucket", [False, True])
def test_the_entry_script_stages_files_and_marks_each_executor_under_a_real_shell(tmp_path: Path,
                                                                                  whole_bucket: bool) -> None:
    from gateway.api.tes import Results, _output_logs, results_of

    work = tmp_path / "work"
    doc = staged_task(work)
    p = run_script(tmp_path, doc, whole_bucket)
    assert p.returncode == 0, p.stderr
    got = results_of(p.stdout)
    assert got is not None and not got.stage_failed
    assert {i: rc for i, (rc, _, _) in got.executors.items()} == {0: 0, 1: 3, 2: 0}  # ignore_error kept its 3
    assert all(t1 >= t0 > 0 for _, t0, t1 in got.executors.values())
    assert (work / "out.txt").read_text() == "from storage\n" and (work / "indir" / "x" / "y").read_text() == "deep\n"
    assert (work / "inline.txt").read_text() == "inline"
    out = tmp_path / "stage"

    def sub(name: str, rest: str) -> Path:
        return out / name / (rest if whole_bucket else "")

    assert (sub("out0", "res") / "renamed.txt").read_text() == "from storage\n"  # the URL's file name
    assert (sub("out1", "tree") / "e" / "f").read_text() == "a\n"
    assert sorted(f.name for f in sub("out2", "csv").iterdir()) == ["r1.csv", "r2.csv"]
    logs = _output_logs(doc, got)
    assert sorted((o["url"], o["path"], o["size_bytes"]) for o in logs) == sorted([
        ("s3://b/res/renamed.txt", f"{work}/out.txt", "13"), ("s3://b/tree/e/f", f"{work}/d/e/f", "2"),
        ("s3://b/csv/r1.csv", f"{work}/r1.csv", "2"), ("s3://b/csv/r2.csv", f"{work}/r2.csv", "3")])
    assert isinstance(got, Results) and "said" in p.stdout
    # A log read from its end (a preview cut short) still has every executor, from the script's last line.
    tail = results_of(p.stdout.splitlines()[-1])
    assert tail is not None and tail.executors == got.executors
    assert p.stdout.splitlines()[-1].startswith("tjg:v1 codes 0:0:")
    cut = [line for line in p.stdout.splitlines() if "executor 0" not in line and "codes" not in line]
    assert results_of("\n".join(cut)).executors == {}  # type: ignore[union-attr]  # (by position, or not at all)


def test_a_failing_executor_stops_the_task_and_a_missing_output_is_a_staging_failure(tmp_path: Path) -> None:
    from gateway.api.tes import results_of

    doc = staged_task(tmp_path / "w1")
    doc["executors"][2]["command"] = ["sh", "-c", "exit 5"]
    p = run_script(tmp_path / "a", doc, False)
    got = results_of(p.stdout)
    assert p.returncode == 5 and got is not None and sorted(got.executors) == [0, 1, 2] and not got.outputs
    assert got.executors[2][0] == 5
    doc = staged_task(tmp_path / "w2")
    doc["executors"][0]["command"] = ["true"]  # out.txt is never written
    p = run_script(tmp_path / "b", doc, False)
    got = results_of(p.stdout)
    assert p.returncode == 1 and got is not None and got.stage_failed and "outputs[0]" in p.stderr


def test_an_output_name_with_quotes_and_spaces_stays_one_word(tmp_path: Path) -> None:
    from gateway.api.tes import results_of

    work = tmp_path / "it's here"
    doc = {"executors": [{"image": "a", "command": ["sh", "-c", f"mkdir -p \"{work}\" && echo x > \"{work}/a b\""]}],
           "outputs": [{"url": "s3://b/o/it's a b", "path": f"{work}/a b"}]}
    p = run_script(tmp_path, doc, False)
    got = results_of(p.stdout)
    assert p.returncode == 0 and got is not None, p.stderr
    assert (tmp_path / "stage" / "out0" / "it's a b").read_text() == "x\n"


def test_executor_logs_come_from_the_log_on_modelarts_and_from_the_exit_code_on_runai(live: AppThread,
                                                                                    tmp_path: Path) -> None:
    c = client(live)
    # What the script prints when it really runs (a real shell), as the simulated program's output on ModelArts.
    doc = staged_task(tmp_path / "w")
    printed = run_script(tmp_path, doc, False).stdout
    body = {"name": "marked", "executors": [{**ex, "env": {**ex["env"], "SIM_STDOUT": printed,
                                                             "SIM_RUN_SECONDS": "1"}} for ex in doc["executors"]],
            "inputs": [doc["inputs"][0], {**doc["inputs"][1], "url": "obs://b/data/in.txt"},
                       {**doc["inputs"][2], "url": "obs://b/dir"}],
            "outputs": [{**o, "url": o["url"].replace("s3://", "obs://")} for o in doc["outputs"]],
            "resources": {"backend_parameters": {"backend": "modelarts"}}}
    r = requests.post(live.url + "/ga4gh/tes/v1/tasks", json=body, headers=ALPHA, timeout=30)
    assert r.status_code == 200, r.text
    tid = r.json()["id"]
    assert wait_state(c, tid, {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR"}).state == "COMPLETE"
    for view in ("BASIC", "FULL"):
        log = c.get_task(tid, view).logs[0]
        assert [e.exit_code for e in log.logs] == [0, 3, 0], view  # one per executor, ignore_error's 3 too
        assert sorted(o.url for o in log.outputs) == ["obs://b/csv/r1.csv", "obs://b/csv/r2.csv",
                                                      "obs://b/res/renamed.txt", "obs://b/tree/e/f"]
        assert int({o.url: o.size_bytes for o in log.outputs}["obs://b/res/renamed.txt"]) == 13
    stdout = c.get_task(tid, "FULL").logs[0].logs[-1].stdout
    assert "said" in stdout and "tjg:v1" not in stdout  # the program's output, without the script's lines

    # Run:ai gives no log: what the exit code tells, the rest said.
    two = c.create_task(task("runai", "two-on-runai",
                             {"image": "a", "command": ["true"], "env": {"SIM_RUN_SECONDS": "1"}},
                             {"image": "a", "command": ["true"], "env": {"SIM_RUN_SECONDS": "1"}},
                             {"image": "a", "command": ["false"], "ignore_error": True,
                              "env": {"SIM_RUN_SECONDS": "1"}}))
    assert wait_state(c, two, {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR"}).state == "COMPLETE"
    log = c.get_task(two, "FULL").logs[0]
    assert [e.exit_code for e in log.logs] == [0, 0]
    assert any("executor 2 has ignore_error" in s for s in log.system_logs), log.system_logs


def test_storage_a_backend_cannot_stage_is_refused_naming_the_field(live: AppThread) -> None:
    info = requests.get(live.url + "/ga4gh/tes/v1/service-info", headers=ALPHA, timeout=30).json()
    assert info["storage"] == ["s3://", "obs://", "pvc://", "nfs://"]  # Run:ai takes all four, ModelArts obs, nfs
    body = {"executors": [{"image": "a", "command": ["true"]}],
            "inputs": [{"path": "/w/inline", "content": "x"}, {"url": "s3://b/k/in.txt", "path": "/w/in.txt"}],
            "resources": {"backend_parameters": {"backend": "modelarts"}}}
    r = requests.post(live.url + "/ga4gh/tes/v1/tasks", json=body, headers=ALPHA, timeout=30)
    assert r.status_code == 400 and r.json()["errors"][0]["loc"] == ["body", "inputs", 1], r.text
    assert "OBS and NFS" in r.json()["detail"]
    body["outputs"], body["inputs"] = [{"url": "s3://b/o/x", "path": "/w/x"}], []
    r = requests.post(live.url + "/ga4gh/tes/v1/tasks", json=body, headers=ALPHA, timeout=30)
    assert r.status_code == 400 and r.json()["errors"][0]["loc"] == ["body", "outputs", 0], r.text
    body["resources"] = {"backend_parameters": {"backend": "runai"}}
    r = requests.post(live.url + "/ga4gh/tes/v1/tasks", json=body, headers=ALPHA, timeout=30)
    assert r.status_code == 200, r.text


def test_a_backends_storage_rules_say_where_a_uri_is_for_it(tmp_path: Path) -> None:
    mirror = {"storage_rules": [{"from": "s3://data", "to": "obs://data-mirror/copy"}]}
    cfg = gateway_config(f"sqlite+aiosqlite:///{tmp_path}/tjg.db", per_backend={"modelarts": mirror})
    with AppThread(lambda: create_app(cfg)) as gw:
        body = {"executors": [{"image": "a", "command": ["true"]}],
                "inputs": [{"url": "s3://data/k/in.txt", "path": "/w/in.txt"}],
                "resources": {"backend_parameters": {"backend": "modelarts"}}}
        r = requests.post(gw.url + "/ga4gh/tes/v1/tasks", json=body, headers=ALPHA, timeout=30)
        assert r.status_code == 200, r.text
        job = requests.get(f"{gw.url}/v1/jobs/{r.json()['id']}", headers=ALPHA, timeout=30).json()
        entry = next(e for e in job["report"] if e["field"] == "inputs[0]")
        assert "/data-mirror/copy/k/" in entry["detail"] and "rewritten s3://data/k -> obs://data-mirror/copy/k " \
            "by the backend's storage_rules" in entry["detail"], entry
    from gateway.core.errors import ValidationError

    with pytest.raises(ValidationError, match=r"storage_rules\.0\.from"):
        gateway_config(f"sqlite+aiosqlite:///{tmp_path}/x.db",
                       per_backend={"modelarts": {"storage_rules": [{"from": "http://x/", "to": "obs://y/"}]}})


def test_runai_tells_the_program_where_a_whole_mounted_uri_lies(live: AppThread) -> None:
    from tests.oracles import validate_runai

    spec = {"name": "m", "backend": "runai", "image": "a", "command": ["true"],
            "inputs": [{"name": "in0", "uri": "s3://b/some/dir", "path": "/tjg/stage/in0"}]}
    r = requests.post(live.url + "/v1/jobs?dry_run=true", json=spec, headers=ALPHA, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()["request"]["body"]
    validate_runai("TrainingCreationRequest", body)  # Run:ai's own OpenAPI
    assert {e["name"]: e["value"] for e in body["spec"]["environmentVariables"]} == {"TJG_SUBPATH_IN0": "some/dir"}


def test_platform_failures_and_preemptions(live: AppThread) -> None:
    c = client(live)
    abnormal = c.create_task(task("modelarts", "abnormal", {"image": "a", "command": ["x"],
                                                            "env": {"SIM_OUTCOME": "abnormal", "SIM_RUN_SECONDS": "1"}}))
    preempted = c.create_task(task("runai", "preempted", {"image": "a", "command": ["x"],
                                                          "env": {"SIM_OUTCOME": "preempted", "SIM_RUN_SECONDS": "1"}}))
    ended = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "PREEMPTED"}
    assert wait_state(c, abnormal, ended).state == "SYSTEM_ERROR"
    assert wait_state(c, preempted, ended).state == "PREEMPTED"


def test_a_tenant_without_a_backend_parameter_uses_its_default_and_sees_only_its_tasks(live: AppThread) -> None:
    alpha, beta = client(live), client(live, "beta-key-456")
    mine = beta.create_task(tes.Task(name="beta-default", executors=[tes.Executor(image="a", command=["x"])]))
    assert beta.get_task(mine, "FULL").logs[0].metadata["backend"] == "modelarts"  # beta's default_backend
    theirs = alpha.create_task(tes.Task(name="alpha-default", executors=[tes.Executor(image="a", command=["x"])]))
    assert alpha.get_task(theirs, "FULL").logs[0].metadata["backend"] == "runai"  # the first backend
    with pytest.raises(requests.HTTPError) as err:
        beta.get_task(theirs, "BASIC")
    assert err.value.response.status_code == 404
    assert theirs not in {t.id for t in beta.list_tasks(page_size=2048).tasks}
    with pytest.raises(requests.HTTPError):
        tes.HTTPClient(live.url, token="wrong-key").list_tasks()


async def test_a_tes_task_is_a_v1_job_with_webhooks(tmp_path: Path) -> None:
    rx = Receiver()
    runner = await rx.start()
    gw: GW = await start_gateway(gateway_config(f"sqlite+aiosqlite:///{tmp_path}/tjg.db", tenant_extra={
        "alpha": {"webhooks": [{"url": rx.url, "secret": "tes-hook"}]}}))
    try:
        status, created = await gw.call("POST", "/ga4gh/tes/v1/tasks", json={
            "name": "Seen Everywhere", "executors": [{"image": "alpine", "command": ["true"],
                                                      "env": {"SIM_RUN_SECONDS": "1"}}],
            "resources": {"backend_parameters": {"backend": "runai"}}, "tags": {"origin": "tes"}})
        assert status == 200, created
        job = await gw.wait_phase(created["id"], {"SUCCEEDED"})
        assert job["name"] == "seen-everywhere" and job["labels"] == {"origin": "tes"}
        _, listed = await gw.call("GET", "/v1/jobs?label=origin=tes")
        assert [j["id"] for j in listed["jobs"]] == [created["id"]]
        assert await eventually(lambda: _hook_for(rx, created["id"], "SUCCEEDED"), within=10)
        _, beta_view = await gw.call("GET", f"/ga4gh/tes/v1/tasks/{created['id']}", headers=BETA)
        assert beta_view["status"] == 404
        _, as_task = await gw.call("GET", f"/ga4gh/tes/v1/tasks/{created['id']}?view=BASIC", headers=ALPHA)
        assert as_task["name"] == "Seen Everywhere" and as_task["state"] == "COMPLETE"
    finally:
        await gw.c.close()
        await runner.cleanup()


async def _hook_for(rx: Receiver, job_id: str, phase: str) -> bool:
    return any(json.loads(b)["job_id"] == job_id and json.loads(b)["to_phase"] == phase for _, b in rx.got)


def test_tjg_list_shows_tes_tasks(live: AppThread) -> None:
    c = client(live)
    tid = c.create_task(task("modelarts", "cli-visible"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TJG_")}
    p = subprocess.run([sys.executable, "-m", "gateway", "list", "--name-prefix", "cli-visible", "--url", live.url,
                        "--api-key", "alpha-key-123"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert p.returncode == 0 and tid in p.stdout, p.stderr


# -- the mapping -----------------------------------------------------------------------------------------------
def test_mapping_report_and_refusals() -> None:
    spec, notes = task_to_spec({
        "name": "Align Reads!", "executors": [
            {"image": "bwa:1", "command": ["bwa", "mem", "ref.fa", "r.fq"], "workdir": "/data", "stdout": "/data/o.sam",
             "env": {"T": "4"}},
            {"image": "bwa:1", "command": ["gzip", "/data/o.sam"], "ignore_error": True, "env": {"T": "4"}}],
        "inputs": [{"url": "s3://bucket/ref/ref.fa", "path": "/data/ref.fa"},
                   {"path": "/data/r.fq", "content": "@r1\nACGT\n+\n!!!!\n"}],
        "outputs": [{"url": "obs://out/run1/o.sam.gz", "path": "/data/o.sam.gz"}],
        "resources": {"cpu_cores": 4, "ram_gb": 16, "disk_gb": 100, "zones": ["z1"],
                      "backend_parameters": {"backend": "modelarts", "gpus": "1", "colour": "blue"}},
        "volumes": ["/data"], "tags": {"run": "1", "Bad Key!": "x"}}, "runai")
    assert spec["name"] == "align-reads" and spec["backend"] == "modelarts" and spec["image"] == "bwa:1"
    script = spec["command"][2]
    assert spec["command"][:2] == ["/bin/sh", "-c"] and "cd /data && env T=4 bwa mem ref.fa r.fq > /data/o.sam" in script
    assert "# executor 1: ignore_error" in script and "mkdir -p /data" in script and "printf" in script
    assert "[ $tjg_rc -eq 0 ] || exit $tjg_rc  # executor 0" in script
    assert spec["env"] == {"T": "4"} and spec["resources"] == {"cpu": 4, "memory": "16G", "gpus": "1"}
    # Each file's folder is mounted apart (an input and an output in one folder are two mount points), and the
    # entry script copies the file between it and the path; an output keeps its URL's file name.
    assert spec["inputs"] == [{"name": "in0", "uri": "s3://bucket/ref", "path": "/tjg/stage/in0", "read_only": True}]
    assert spec["outputs"] == [{"name": "out0", "uri": "obs://out/run1", "path": "/tjg/stage/out0",
                                "read_only": False}] and spec["labels"] == {"run": "1"}
    assert 'cp "/tjg/stage/in0/${TJG_SUBPATH_IN0:+$TJG_SUBPATH_IN0/}"ref.fa /data/ref.fa' in script
    assert 'cp /data/o.sam.gz "/tjg/stage/out0/${TJG_SUBPATH_OUT0:+$TJG_SUBPATH_OUT0/}"o.sam.gz' in script
    outcomes = {n["field"]: n["outcome"] for n in notes}
    assert outcomes["tes.resources.disk_gb"] == "dropped" and outcomes["tes.resources.zones"] == "dropped"
    assert outcomes["tes.resources.backend_parameters.colour"] == "dropped" and outcomes["tes.tags.Bad Key!"] == "dropped"
    for bad, loc in (
        ({"executors": []}, ["body", "executors"]),
        ({"executors": [{"image": "a", "command": ["x"]}, {"image": "b", "command": ["y"]}]}, ["body", "executors"]),
        ({"executors": [{"image": "a", "command": ["x"]}], "inputs": [{"url": "http://x/y", "path": "/y"}]},
         ["body", "inputs", 0, "url"]),
        ({"executors": [{"image": "a", "command": ["x"]}],
          "resources": {"backend_parameters": {"zone": "z"}, "backend_parameters_strict": True}},
         ["body", "resources", "backend_parameters", "zone"]),
    ):
        with pytest.raises(BadRequest) as err:
            task_to_spec(bad, "runai")
        assert err.value.errors is not None and err.value.errors[0]["loc"] == loc


def test_states_from_phase_and_vendor_reason() -> None:
    def row(phase: str, **status: Any) -> dict[str, Any]:
        return {"phase": phase, "status": status, "submit_state": "submitted"}

    assert tes_state(row("STARTING")) == "INITIALIZING" and tes_state(row("SUSPENDED")) == "PAUSED"
    assert tes_state(row("CANCELLING")) == "CANCELING" and tes_state(row("SUCCEEDED")) == "COMPLETE"
    assert tes_state(row("FAILED", exit_code=2, vendor_phase="Failed")) == "EXECUTOR_ERROR"
    assert tes_state(row("FAILED", exit_code=137, vendor_phase="Abnormal")) == "SYSTEM_ERROR"
    assert tes_state(row("FAILED", message="Workload was preempted")) == "PREEMPTED"
    assert tes_state({**row("FAILED"), "submit_state": "rejected"}) == "SYSTEM_ERROR"


# -- every answer against the official TES OpenAPI --------------------------------------------------------------
def tes_schema() -> Any:
    doc = yaml.safe_load(TES_SPEC.read_text())
    comps = doc["components"]["schemas"]
    comps["Service"], comps["ServiceType"] = SERVICE, SERVICE_TYPE
    text = json.dumps(doc, default=str).replace(
        "https://raw.githubusercontent.com/ga4gh-discovery/ga4gh-service-info/v1.0.0/service-info.yaml"
        "#/components/schemas/", "#/components/schemas/")
    return schemathesis.openapi.from_dict(json.loads(text))


TES = tes_schema()


def test_the_tes_document_is_the_official_one() -> None:
    assert set(TES.raw_schema["paths"]) == {"/service-info", "/tasks", "/tasks/{id}",
                                                                "/tasks/{id}:cancel"}


@TES.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_tes_answer_conforms_to_the_tes_openapi(case: Any, live: AppThread) -> None:
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance

    response = case.call(base_url=live.url + "/ga4gh/tes/v1", headers={"Authorization": "Bearer alpha-key-123"})
    # The TES document lists only 200 for each operation, so status codes are not checked against it: an
    # unknown task id is a 404 and a task no backend can run a 400, both problem documents. Every 200 must
    # match its schema, and nothing may be a server error.
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
