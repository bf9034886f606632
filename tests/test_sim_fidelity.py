"""The simulators' metrics, telemetry, history and events, driven by the vendors' own SDKs, and the
fidelity points found by checking the simulators against Run:ai's OpenAPI and the Huawei SDK models."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from simulators.runai.app import SIM_KEY as RUNAI_KEY
from tests.conftest import CLUSTER, LoopSim, SimThread, eventually, start_loop_sim, until
from tests.oracles import load_huawei, load_runapy, runai_document, validate_runai
from tests.test_simulators import RunaiRaw, _ma_client, runapy_client, training, wait_for


def _spec_statuses() -> dict[tuple[str, str], set[int]]:
    """(METHOD, path template) -> the status codes Run:ai's OpenAPI lists for it."""
    out = {}
    for path, ops in runai_document()["paths"].items():
        for method, op in ops.items():
            if isinstance(op, dict) and "responses" in op:
                out[(method.upper(), path)] = {int(c) for c in op["responses"]}
    return out


def _hang_training(client: Any, name: str, **env: str) -> str:
    from runai import models

    variables = [models.EnvironmentVariable(name=k, value=v) for k, v in {"SIM_OUTCOME": "hang", **env}.items()]
    req = models.TrainingCreationRequest(
        name=name, project_id="1", cluster_id=CLUSTER,
        spec=models.TrainingSpecSpec(image="pytorch:2", compute=models.SupersetSpecAllOfCompute(gpu_devices_request=2),
                                     environment_variables=variables))
    return str(client.workloads.trainings.create_training1(training_creation_request=req).data["workloadId"])


def test_runapy_reads_workload_metrics(runai_sim_thread: SimThread) -> None:
    from runai import models

    client = runapy_client(runai_sim_thread.url)
    wid = _hang_training(client, "metrics-sdk")
    get = client.workloads.trainings.get_training
    assert wait_for(lambda: get(wid).data["actualPhase"], "Running") == "Running"
    api = client.workloads.workloads
    types = [models.WorkloadMetricType.GPU_UTILIZATION, models.WorkloadMetricType.GPU_MEMORY_USAGE_BYTES,
             models.WorkloadMetricType.CPU_USAGE_CORES, models.WorkloadMetricType.CPU_MEMORY_USAGE_BYTES,
             models.WorkloadMetricType.NIM_NUM_REQUESTS_RUNNING]

    def second_before(now: datetime) -> Any:
        return api.get_workload_metrics(wid, metric_type=types, start=now - timedelta(seconds=1), end=now,
                                        number_of_samples=40)

    def three_samples(asked: tuple[datetime, Any]) -> bool:
        gpu = [m for m in asked[1].data["measurements"] if m["type"] == "GPU_UTILIZATION"]
        return bool(gpu) and len(gpu[0]["values"]) >= 3

    now, got = until(lambda: (lambda at: (at, second_before(at)))(datetime.now(UTC)), three_samples)
    assert got.status_code == 200
    body = got.data
    validate_runai("MetricsCompositeResponse", body)
    load_runapy("MetricsCompositeResponse", body)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for m in body["measurements"]:
        by_type.setdefault(m["type"], []).append(m)
    # Two GPUs: one measurement per device, labelled as Run:ai labels them.
    assert sorted(m["labels"]["gpu"] for m in by_type["GPU_UTILIZATION"]) == ["0", "1"]
    util = by_type["GPU_UTILIZATION"][0]["values"]
    assert len(util) >= 3 and all(0 <= float(v["value"]) <= 100 for v in util)
    # Only while it runs: no sample before the workload reached Running.
    running_at = datetime.fromisoformat(get(wid).data["createdAt"].replace("Z", "+00:00"))
    assert all(datetime.fromisoformat(v["timestamp"].replace("Z", "+00:00")) >= running_at for v in util)
    assert by_type["NIM_NUM_REQUESTS_RUNNING"][0]["values"] == []  # a training serves nothing
    # Deterministic: the same question gives the same answer.
    again = second_before(now)
    assert again.data == body


def test_runapy_reads_telemetry_history_and_events(runai_sim_thread: SimThread) -> None:
    from runai import models

    client = runapy_client(runai_sim_thread.url)
    ids = [_hang_training(client, f"tele-{i}") for i in range(3)]
    get = client.workloads.trainings.get_training
    for wid in ids:
        assert wait_for(lambda w=wid: get(w).data["actualPhase"], "Running") == "Running"
    api = client.workloads.workloads
    # runapy sends a scalar enum as str(member), "WorkloadTelemetryType.GPU_ALLOCATION" on Python 3.11, which
    # no server accepts; its lists are joined from the values. So the scalar goes in as its value.
    tele = api.get_workloads_telemetry(models.WorkloadTelemetryType.GPU_ALLOCATION.value, group_by=["ProjectId"],
                                       cluster_id=CLUSTER, filter_by_phases=[models.Phase.RUNNING])
    validate_runai("TelemetryResponse", tele.data)
    load_runapy("TelemetryResponse", tele.data)
    assert tele.data["values"] == [{"value": "6", "groups": [{"key": "ProjectId", "value": "1",
                                                              "name": "project-1"}]}]
    count = api.get_workloads_telemetry(models.WorkloadTelemetryType.WORKLOADS_COUNT.value,
                                        group_by=["Type", "Phase"])
    assert count.data["values"][0]["value"] == "3"

    events_api = client.workloads.events
    evs = events_api.get_workload_events(ids[0]).data["events"]
    assert [e["reason"] for e in evs] == ["Running", "Initializing", "Pending", "Creating"]  # desc by default
    for e in evs:
        load_runapy("Event2", e)
    hist = events_api.get_workload_history(ids[0]).data
    load_runapy("GetWorkloadHistory200Response", hist)
    phases = [r["spec"]["phaseUpdate"]["phase"] for r in hist["records"] if r["meta"]["type"] == "PhaseUpdate"]
    assert phases == ["Creating", "Pending", "Initializing", "Running"]
    assert {r["meta"]["type"] for r in hist["records"]} == {"PhaseUpdate", "Event"}


async def test_runai_status_codes_are_the_documented_ones(runai_sim: LoopSim) -> None:
    """Every answer, good or bad, carries a status code the operation's spec lists, in the error shape."""
    documented = _spec_statuses()
    seen: list[tuple[str, str, int]] = []
    async with aiohttp.ClientSession() as s:
        async def token(body: dict[str, Any]) -> int:
            async with s.post(runai_sim.url + "/api/v1/token", json=body) as r:
                seen.append(("POST", "/api/v1/token", r.status))
                return r.status

        assert await token({"grantType": "client_credentials", "clientID": "tjg-demo", "clientSecret": "no"}) == 400
        assert await token({"grantType": "nope"}) == 400
        c = RunaiRaw(runai_sim, s)
        await c.login()
        _, made = await c.call("POST", "/api/v1/workloads/trainings", training("codes", SIM_OUTCOME="hang"))
        wid = made["workloadId"]
        calls = [
            ("POST", "/api/v1/workloads/trainings", "/api/v1/workloads/trainings", training("codes")),
            ("POST", "/api/v1/workloads/trainings", "/api/v1/workloads/trainings",
             {**training("badcluster"), "clusterId": "not-a-uuid"}),
            ("GET", "/api/v1/workloads", "/api/v1/workloads?limit=9999", None),
            ("GET", "/api/v1/workloads", "/api/v1/workloads?sortOrder=sideways", None),
            ("GET", "/api/v1/workloads/count", "/api/v1/workloads/count?filterBy=%%%", None),
            ("GET", "/api/v1/workloads/{workloadId}/events", f"/api/v1/workloads/{wid}/events?sortOrder=up", None),
            ("GET", "/api/v1/workloads/{workloadId}/events", "/api/v1/workloads/nope/events", None),
            ("GET", "/api/v1/workloads/{workloadId}/history", f"/api/v1/workloads/{wid}/history?limit=0", None),
            ("GET", "/api/v1/workloads/{workloadId}/metrics", f"/api/v1/workloads/{wid}/metrics?metricType=X", None),
            ("GET", "/api/v1/workloads/{workloadId}/metrics", f"/api/v1/workloads/{wid}/metrics", None),
            ("GET", "/api/v1/workloads/telemetry", "/api/v1/workloads/telemetry?telemetryType=NOPE", None),
            ("GET", "/api/v1/workloads/telemetry",
             "/api/v1/workloads/telemetry?telemetryType=WORKLOADS_COUNT&clusterId=x", None),
            ("POST", "/api/v1/workloads/trainings/{workloadId}/suspend", "/api/v1/workloads/trainings/nope/suspend",
             None),
        ]
        for method, template, url, body in calls:
            status, err = await c.call(method, url, body)
            seen.append((method, template, status))
            assert status >= 400 and set(err) >= {"code", "message"}, (url, status, err)
    for method, template, status in seen:
        # A query parameter no request can get right is a 400 even where the operation lists only 500 (issue 30:
        # a 500 tells a client to retry what never succeeds).
        bad_query = {400} if method == "GET" and template in QUERY_400 else set()
        assert status in documented[(method, template)] | bad_query, f"{method} {template} answered {status}"


QUERY_400 = {"/api/v1/workloads", "/api/v1/workloads/count", "/api/v1/workloads/{workloadId}/events",
             "/api/v1/workloads/{workloadId}/history"}


async def test_runai_list_refuses_what_it_cannot_filter_and_answers_405_and_413_as_the_vendor(
        runai_sim: LoopSim) -> None:
    """Issue 30: unknown filterBy fields and sortBy values were accepted (and answered nothing), `nodepool`
    (documented) matched nothing, a 405 had no Allow, a body over 8 MiB got plain text, inferences counted
    as Train."""
    async with aiohttp.ClientSession() as s:
        c = RunaiRaw(runai_sim, s)
        await c.login()
        _, made = await c.call("POST", "/api/v1/workloads/trainings", training("pools", SIM_OUTCOME="hang"))
        for q in ("filterBy=bogus==1", "sortBy=bogus", "limit=9999", "filterBy=name"):
            status, err = await c.call("GET", f"/api/v1/workloads?{q}")
            assert status == 400 and set(err) >= {"code", "message"}, (q, status, err)
        status, got = await c.call("GET", "/api/v1/workloads?filterBy=nodepool==default")
        assert status == 200 and made["workloadId"] in [w["id"] for w in got["workloads"]]
        status, got = await c.call("GET", "/api/v1/workloads?filterBy=nodepool==nowhere")
        assert status == 200 and got["workloads"] == []
        async with s.put(runai_sim.url + "/api/v1/workloads", headers={"Authorization": f"Bearer {c.token}"}) as r:
            assert r.status == 405 and "GET" in r.headers["Allow"] and r.content_type == "application/json"
        big = b'{"name": "' + b"x" * (9 * 1024 * 1024) + b'"}'
        async with s.post(runai_sim.url + "/api/v1/workloads/trainings", data=big, headers={
                "Authorization": f"Bearer {c.token}", "Content-Type": "application/json"}) as r:
            assert r.status == 413 and r.content_type == "application/json"
            assert set(await r.json()) >= {"code", "message"}
        status, _ = await c.call("POST", "/api/v1/workloads/inferences", {
            "name": "cat-serve", "projectId": "1", "clusterId": CLUSTER,
            "spec": {"image": "vllm:1", "servingPort": {"container": 8000}}})
        assert status == 202
        status, tele = await c.call("GET", "/api/v1/workloads/telemetry?telemetryType=WORKLOADS_COUNT"
                                           "&groupBy=Category")
        assert status == 200
        groups = json.dumps(tele)
        assert "Deploy" in groups and "Train" in groups, tele


async def test_runai_unknown_routes_and_methods_answer_in_the_error_shape(runai_sim: LoopSim) -> None:
    async with aiohttp.ClientSession() as s:
        for method, path in (("GET", "/api/v1/nothing-here"), ("PUT", "/api/v1/workloads")):
            async with s.request(method, runai_sim.url + path) as r:
                assert r.content_type == "application/json"
                body = await r.json()
                assert r.status in (404, 405) and body["code"] == r.status and path in body["message"]


async def test_runai_distributed_without_framework_and_created_by_the_caller() -> None:
    sim = await start_loop_sim("runai", speed=20.0, credentials=[("alice", "a-secret"), ("bob", "b-secret")])
    try:
        async with aiohttp.ClientSession() as s:
            c = RunaiRaw(sim, s)
            async with s.post(sim.url + "/api/v1/token", json={"grantType": "client_credentials",
                                                              "clientID": "alice", "clientSecret": "a-secret"}) as r:
                c.token = (await r.json())["accessToken"]
            dist = {**training("dist-nofw", SIM_OUTCOME="hang")}
            dist["spec"]["numWorkers"] = 2  # distributedFramework is nullable in the spec
            status, made = await c.call("POST", "/api/v1/workloads/distributed", dist)
            assert status == 202 and made["createdBy"] == "alice"
            validate_runai("DistributedWorkload", made) if "DistributedWorkload" in \
                runai_document()["components"]["schemas"] else None
            _, listed = await c.call("GET", f"/api/v1/workloads/{made['workloadId']}")
            assert listed["submittedBy"] == "alice"
            # Issue 30: the list record said distributedFramework: null, which its schema does not allow.
            assert "distributedFramework" not in listed
            validate_runai("Workload", listed)
            # ... and a taken name's 400 said rule "unique", outside PolicyRuleEnum: runapy could not load it.
            status, dup = await c.call("POST", "/api/v1/workloads/distributed", dist)
            assert status == 400
            validate_runai("ComplianceIssuesV2", {"complianceIssues": dup["complianceIssues"]})
    finally:
        await sim.runner.cleanup()


async def test_runai_phases_follow_the_documented_order(runai_sim: LoopSim) -> None:
    """Creating -> Pending -> Initializing -> Running; resume: Resuming -> Pending -> Initializing -> Running."""
    async with aiohttp.ClientSession() as s:
        c = RunaiRaw(runai_sim, s)
        await c.login()
        _, made = await c.call("POST", "/api/v1/workloads/trainings", training("order", SIM_OUTCOME="hang"))
        wid = made["workloadId"]

        async def reaches(phase: str) -> None:
            async def now() -> bool:
                return (await c.call("GET", f"/api/v1/workloads/{wid}"))[1]["phase"] == phase
            assert await eventually(now), phase

        await reaches("Running")
        await c.call("POST", f"/api/v1/workloads/trainings/{wid}/suspend")
        await reaches("Stopped")
        await c.call("POST", f"/api/v1/workloads/trainings/{wid}/resume")
        await reaches("Running")
        _, evs = await c.call("GET", f"/api/v1/workloads/{wid}/events?sortOrder=asc")
        assert [e["reason"] for e in evs["events"]] == [
            "Creating", "Pending", "Initializing", "Running", "Stopping", "Stopped",
            "Resuming", "Pending", "Initializing", "Running"]


def test_huawei_sdk_reads_metrics_events_and_terminate() -> None:
    from huaweicloudsdkmodelarts.v1 import (
        CreateTrainingJobRequest,
        Job,
        JobActionType,
        JobAlgorithm,
        JobEngine,
        JobMetadata,
        ListTrainingJobEventsRequest,
        ShowTrainingJobDetailsRequest,
        ShowTrainingJobMetricsRequest,
        Spec,
        SpecResource,
        StopTrainingJobRequest,
    )

    with SimThread("modelarts", speed=10.0, sample_seconds=0.1) as sim:
        client = _ma_client(sim.url)
        body = Job(kind="job", metadata=JobMetadata(name="sdk-metrics", workspace_id="0"),
                   algorithm=JobAlgorithm(engine=JobEngine(image_url="swr/x:1"), command="python t.py",
                                          environments={"SIM_OUTCOME": "hang", "SIM_GPU_UTIL": "80"}),
                   spec=Spec(resource=SpecResource(flavor_id="modelarts.vm.gpu.a100.1", node_count=1)))
        jid = client.create_training_job(CreateTrainingJobRequest(body=body)).metadata.id

        def show() -> Any:
            return client.show_training_job_details(ShowTrainingJobDetailsRequest(training_job_id=jid))

        assert wait_for(lambda: show().status.phase, "Running") == "Running"
        running = show()
        # While it runs a task has no exit code; environments come back as the SDK's list of objects.
        assert [t.exit_code for t in running.status.task_statuses] == [None]
        assert running.algorithm.environments == [{"SIM_OUTCOME": "hang"}, {"SIM_GPU_UTIL": "80"}]
        got = until(lambda: client.show_training_job_metrics(
            ShowTrainingJobMetricsRequest(training_job_id=jid, task_id="worker-0")),
            lambda m: all(len(x.value or []) >= 3 for x in m.metrics))  # three samples in every series
        raw = {"metrics": [{"metric": m.metric, "value": m.value} for m in got.metrics]}
        load_huawei("ShowTrainingJobMetricsResponse", raw)
        series = {m.metric: m.value for m in got.metrics}
        assert set(series) == {"cpuUsage", "memUsage", "gpuUtil", "gpuMemUsage"}
        assert len(series["gpuUtil"]) >= 3 and 60 <= sum(series["gpuUtil"]) / len(series["gpuUtil"]) <= 100

        stopped = client.stop_training_job(StopTrainingJobRequest(training_job_id=jid,
                                                                  body=JobActionType(action_type="terminate")))
        assert stopped.metadata.name == "sdk-metrics" and stopped.spec.resource.flavor_id == "modelarts.vm.gpu.a100.1"
        assert stopped.status.phase == "Terminating" and stopped.algorithm.engine.image_url == "swr/x:1"
        assert wait_for(lambda: show().status.phase, "Terminated") == "Terminated"
        assert [t.exit_code for t in show().status.task_statuses] == [143]

        evs = client.list_training_job_events(ListTrainingJobEventsRequest(training_job_id=jid, limit=2, offset=1,
                                                                           order="desc"))
        # Creating, Pending and its queuing event, Running, Terminating, Terminated: newest first.
        assert (evs.total, evs.limit, evs.offset, evs.order) == (6, 2, 1, "desc")
        assert [e.message for e in evs.events] == ["Training job phase changed to Terminating",
                                                   "Training job phase changed to Running"]


async def test_modelarts_raw_responses_have_only_sdk_fields() -> None:
    """Read with aiohttp, the job, terminate, events and metrics answers load into the SDK models with
    every key known (the SDK itself drops unknown keys silently)."""
    from simulators.modelarts.app import DEMO_IAM_TOKENS
    from tests.conftest import PROJECT

    sim = await start_loop_sim("modelarts", speed=20.0, sample_seconds=0.05)
    try:
        async with aiohttp.ClientSession() as s:
            async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
                async with s.request(method, f"{sim.url}/v2/{PROJECT}{path}", json=body,
                                     headers={"X-Auth-Token": DEMO_IAM_TOKENS[0]}) as r:
                    return r.status, await r.json()

            status, made = await call("POST", "/training-jobs", {
                "kind": "job", "metadata": {"name": "raw-ma"},
                "algorithm": {"engine": {"image_url": "x:1"}, "environments": {"SIM_OUTCOME": "hang"}},
                "spec": {"resource": {"flavor_id": "modelarts.vm.gpu.t4", "node_count": 2}}})
            assert status == 201
            jid = made["metadata"]["id"]

            async def running() -> bool:
                return (await call("GET", f"/training-jobs/{jid}"))[1]["status"]["phase"] == "Running"

            assert await eventually(running)
            _, shown = await call("GET", f"/training-jobs/{jid}")
            load_huawei("ShowTrainingJobDetailsResponse", shown)
            _, metrics = await call("GET", f"/training-jobs/{jid}/metrics/worker-1")
            load_huawei("ShowTrainingJobMetricsResponse", metrics)
            assert (await call("GET", f"/training-jobs/{jid}/metrics/worker-9"))[0] == 400
            _, evs = await call("GET", f"/training-jobs/{jid}/events")
            load_huawei("ListTrainingJobEventsResponse", evs)
            status, stopped = await call("POST", f"/training-jobs/{jid}/actions", {"action_type": "terminate"})
            assert status == 202
            load_huawei("StopTrainingJobResponse", stopped)
            async with s.get(f"{sim.url}/v2/{PROJECT}/no-such-thing") as r:
                assert r.status == 404 and set(await r.json()) >= {"error_code", "error_msg"}
    finally:
        await sim.runner.cleanup()


@pytest.mark.parametrize("env,low", [({"SIM_GPU_UTIL": "3"}, True), ({}, False)])
async def test_sim_gpu_util_pins_the_series(runai_sim: LoopSim, env: dict[str, str], low: bool) -> None:
    async with aiohttp.ClientSession() as s:
        c = RunaiRaw(runai_sim, s)
        await c.login()
        body = training(f"util-{int(low)}", SIM_OUTCOME="hang", **env)
        body["spec"]["compute"] = {"gpuDevicesRequest": 1}
        _, made = await c.call("POST", "/api/v1/workloads/trainings", body)
        sim = runai_sim.app[RUNAI_KEY]
        w = sim.jobs[made["workloadId"]]  # the usage model is a function of time: nothing to wait for
        now = time.time()
        values = [sim.usage(w).gpu(now - i) for i in range(30)]
        assert (max(values) < 5) if low else (min(values) > 30)


def test_runapy_reads_node_pools_metrics_projects_and_a_waiting_workload() -> None:
    """Capacity and quota as Run:ai serves them: runapy reads every answer with nothing dropped, and each is
    schema-valid against the OpenAPI subset (node pools, their metrics, org-unit projects, and a workload
    kept Pending by the scheduler with its reason)."""
    from runai import models

    with SimThread("runai", speed=10.0, gpus={"a100": 2, "h100": 1}, quota={"1": 1}) as sim:
        client = runapy_client(sim.url)
        pools = client.organizations.node_pools.get_nodepools().data
        load_runapy("GetNodepools200Response", pools)
        for p in pools["nodepools"]:
            validate_runai("Nodepool", p)
        assert sorted(p["name"] for p in pools["nodepools"]) == ["a100", "h100"]
        holder = _hang_training(client, "holds-a100")  # 2 GPUs (see _hang_training), project 1: over its quota
        get = client.workloads.trainings.get_training
        assert wait_for(lambda: get(holder).data["actualPhase"], "Running") == "Running"
        now = datetime.now(UTC)
        got = client.organizations.node_pools.get_nodepool_metrics(
            CLUSTER, "a100", start=now - timedelta(minutes=1), end=now,
            metric_type=[models.MetricsType.TOTAL_GPU, models.MetricsType.ALLOCATED_GPU,
                         models.MetricsType.UNALLOCATED_GPU]).data
        validate_runai("MetricsResponse", got)
        load_runapy("MetricsResponse", got)
        values = {m["type"]: float(m["values"][-1]["value"]) for m in got["measurements"]}
        assert values == {"TOTAL_GPU": 2.0, "ALLOCATED_GPU": 2.0, "UNALLOCATED_GPU": 0.0}
        projects = client.organizations.projects.get_projects().data
        # runapy reads the answer (the call above), but its GetProjects200Response holds a different "Project"
        # (the reports API's {metadata, current, timeRange}: a name clash in the SDK), so the org-unit project
        # is held to Run:ai's OpenAPI schema instead.
        mine = next(p for p in projects["projects"] if p["id"] == "1")
        validate_runai("Project", mine)
        a100 = next(s for s in mine["status"]["nodePoolQuotaStatuses"] if s["nodePoolName"] == "a100")
        assert a100["allocated"]["gpu"] == 2.0
        assert next(r for r in mine["resources"] if r["nodePool"]["name"] == "a100")["gpu"]["deserved"] == 1
        waiting = _hang_training(client, "waits-for-a100")
        one = client.workloads.workloads.get_workload(waiting).data

        def pending(w: dict[str, Any]) -> bool:
            return w["phase"] == "Pending" and any(c.get("reason") == "Unschedulable" for c in w["conditions"])

        one = until(lambda: client.workloads.workloads.get_workload(waiting).data, pending)
        validate_runai("Workload", one)
        load_runapy("Workload", one)
        assert pending(one) and "phaseReason" not in one and one["totalPendingTimeSeconds"] >= 0
        assert "2 GPUs asked, 0 of 2 free in a100" in one["phaseMessage"]


def test_huawei_sdk_reads_the_flavors_with_what_can_be_had_now() -> None:
    from huaweicloudsdkmodelarts.v1 import ShowTrainingJobFlavorsRequest

    with SimThread("modelarts", speed=10.0, gpus={"modelarts.vm.gpu.a100.1": 1}) as sim:
        client = _ma_client(sim.url)
        flavors = client.show_training_job_flavors(ShowTrainingJobFlavorsRequest(flavor_type="GPU"))
        by_id = {f.flavor_id: f for f in flavors.flavors}
        assert flavors.total_count == len(by_id) and by_id["modelarts.vm.gpu.a100.1"].max_num == 1
        assert by_id["modelarts.vm.gpu.a100.1"].flavor_info.gpu.unit_num == 1
        assert all(f.flavor_type == "GPU" for f in flavors.flavors)


async def test_modelarts_queues_a_job_and_reports_the_end_of_each_run_in_sdk_fields() -> None:
    from simulators.modelarts.app import DEMO_IAM_TOKENS
    from tests.conftest import PROJECT

    sim = await start_loop_sim("modelarts", speed=20.0, gpus={"modelarts.vm.gpu.a100.1": 1})
    try:
        async with aiohttp.ClientSession() as s:
            async def call(method: str, path: str, body: Any = None) -> Any:
                async with s.request(method, f"{sim.url}/v2/{PROJECT}{path}", json=body,
                                     headers={"X-Auth-Token": DEMO_IAM_TOKENS[0]}) as r:
                    return await r.json()

            load_huawei("ShowTrainingJobFlavorsResponse", await call("GET", "/training-job-flavors"))
            load_huawei("ListPoolsResponse", await call("GET", "/pools"))
            # The first holds the flavor's one GPU for 2 s (40 simulated); the second waits, then runs out of memory.
            made = [await call("POST", "/training-jobs", {
                "kind": "job", "metadata": {"name": f"oom-{i}"},
                "algorithm": {"engine": {"image_url": "x:1"},
                              "environments": {"SIM_OUTCOME": "oom", "SIM_RUN_SECONDS": seconds}},
                "spec": {"resource": {"flavor_id": "modelarts.vm.gpu.a100.1", "node_count": 1}}})
                for i, seconds in enumerate(("40", "1"))]
            second = made[1]["metadata"]["id"]

            async def shown_when(ok: Any) -> Any:
                shown = await call("GET", f"/training-jobs/{second}")
                return shown if ok(shown["status"]) else None

            queued = await eventually(lambda: shown_when(lambda st: st["phase"] == "Pending"))
            assert queued and queued["status"]["secondary_phase"] == "Queuing"  # the first holds the GPU
            shown = await eventually(lambda: shown_when(lambda st: st["phase"] == "Failed"))
            assert shown, "the queued job never ran and ended"
            load_huawei("ShowTrainingJobDetailsResponse", shown)
            assert shown["status"]["running_records"][-1]["end_reason"] == "OOMKilled"
            assert [t["exit_code"] for t in shown["status"]["task_statuses"]] == [137]
            evs = await call("GET", f"/training-jobs/{second}/events")
            load_huawei("ListTrainingJobEventsResponse", evs)
            assert "The training job is queuing and awaiting resource allocation." in [
                e["message"] for e in evs["events"]]
    finally:
        await sim.runner.cleanup()


async def test_runai_terminate_after_preemption_ends_the_workload_with_its_event() -> None:
    """A training that asked for terminateAfterPreemption is not sent back to Pending: it fails, with the
    Preempted condition and a Preempted event naming the workload that needed the GPUs."""
    sim = await start_loop_sim("runai", speed=20.0, gpus={"default": 2}, quota={"1": 1, "2": 2})
    try:
        async with aiohttp.ClientSession() as s:
            c = RunaiRaw(sim, s)
            assert await c.login() == 200
            over = training("over", SIM_OUTCOME="hang")
            over["spec"].update(compute={"gpuDevicesRequest": 2}, terminateAfterPreemption=True)
            _, made = await c.call("POST", "/api/v1/workloads/trainings", over)
            wid = made["workloadId"]

            async def phase_of(want: str) -> Any:
                _, w = await c.call("GET", f"/api/v1/workloads/{wid}")
                return w if w["phase"] == want else None

            assert await eventually(lambda: phase_of("Running"))
            mine = training("mine", SIM_OUTCOME="hang")
            mine.update(projectId="2")
            mine["spec"]["compute"] = {"gpuDevicesRequest": 2}
            assert (await c.call("POST", "/api/v1/workloads/trainings", mine))[0] == 202
            failed = await eventually(lambda: phase_of("Failed"))
            assert failed, "the preempted workload did not end"
            validate_runai("Workload", failed)
            cond = [x for x in failed["conditions"] if x["type"] == "Failed"]
            assert cond and cond[0]["reason"] == "Preempted" and "mine" in cond[0]["message"]
            _, evs = await c.call("GET", f"/api/v1/workloads/{wid}/events?sortOrder=asc")
            assert [e["reason"] for e in evs["events"]][-2:] == ["Preempted", "Failed"]
            for e in evs["events"]:
                load_runapy("Event2", e)
    finally:
        await sim.runner.cleanup()
