"""The simulators behave like the vendors: their official SDKs work unchanged against them."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from adapters.modelarts.signer import sign
from simulators.kit import parse_faults
from simulators.modelarts.app import SIM_KEY as MA_KEY
from simulators.runai.app import SIM_KEY as RUNAI_KEY
from tests.conftest import CLUSTER, PROJECT, LoopSim, SimThread, eventually, start_loop_sim


def runapy_client(url: str, secret: str = "tjg-demo-secret") -> Any:
    from runai.api_client import ApiClient
    from runai.configuration import Configuration
    from runai.runai_client import RunaiClient

    cfg = Configuration(client_id="tjg-demo", client_secret=secret, runai_base_url=url, retry_enabled=False)
    return RunaiClient(ApiClient(cfg))


def wait_for(fn: Any, want: Any, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_runapy_drives_the_runai_simulator(runai_sim_thread: SimThread) -> None:
    from runai import models

    client = runapy_client(runai_sim_thread.url)
    req = models.TrainingCreationRequest(
        name="sdk-train", project_id="1", cluster_id=CLUSTER,
        spec=models.TrainingSpecSpec(image="python:3.11", command="python", args="train.py",
                                     environment_variables=[models.EnvironmentVariable(name="SIM_OUTCOME",
                                                                                       value="hang")]))
    created = client.workloads.trainings.create_training1(training_creation_request=req)
    assert created.status_code == 202
    wid = created.data["workloadId"]
    assert created.data["actualPhase"] == "Creating" and created.data["desiredPhase"] == "Running"
    get = client.workloads.trainings.get_training

    assert wait_for(lambda: get(wid).data["actualPhase"], "Running") == "Running"
    listed = client.workloads.workloads.get_workloads(filter_by=["type==Training", "name=^sdk-"], limit=10)
    assert [w["id"] for w in listed.data["workloads"]] == [wid]
    assert listed.data["workloads"][0]["phase"] == "Running"
    none = client.workloads.workloads.get_workloads(filter_by=["phase==Completed"])
    assert none.data["workloads"] == []

    assert client.workloads.trainings.suspend_training(wid).data["code"] == 202
    assert wait_for(lambda: get(wid).data["actualPhase"], "Stopped") == "Stopped"
    assert client.workloads.trainings.resume_training(wid).status_code == 202
    assert wait_for(lambda: get(wid).data["actualPhase"], "Running") == "Running"
    assert client.workloads.trainings.delete_training(wid).status_code == 202

    from runai.exceptions import ApiException

    def gone() -> bool:
        try:
            get(wid)
            return False
        except ApiException as err:
            return err.status == 404

    assert wait_for(gone, True) is True
    deleted = client.workloads.workloads.get_workloads(deleted=True)
    assert [w["id"] for w in deleted.data["workloads"]] == [wid]


def _ma_client(url: str, sk: str = "TJGDEMOSK") -> Any:
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.http.http_config import HttpConfig
    from huaweicloudsdkmodelarts.v1 import ModelArtsClient

    cfg = HttpConfig.get_default_config()
    cfg.retry_times = 0
    creds = BasicCredentials("TJGDEMOAK", sk, PROJECT)
    return ModelArtsClient.new_builder().with_http_config(cfg).with_credentials(creds) \
        .with_endpoints([url]).build()


def test_huawei_sdk_drives_the_modelarts_simulator(modelarts_sim_thread: SimThread) -> None:
    from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
    from huaweicloudsdkmodelarts.v1 import (
        CreateTrainingJobRequest,
        DeleteTrainingJobRequest,
        Filter,
        Job,
        JobActionType,
        JobAlgorithm,
        JobEngine,
        JobMetadata,
        JobSearches,
        ListTrainingJobsRequest,
        ShowTrainingJobDetailsRequest,
        Spec,
        SpecResource,
        StopTrainingJobRequest,
    )

    client = _ma_client(modelarts_sim_thread.url)
    body = Job(kind="job", metadata=JobMetadata(name="sdk-ma", workspace_id="0"),
               algorithm=JobAlgorithm(engine=JobEngine(image_url="swr/x:1"), command="python t.py",
                                      environments={"SIM_OUTCOME": "hang"}),
               spec=Spec(resource=SpecResource(flavor_id="modelarts.vm.cpu.2u", node_count=1)))
    created = client.create_training_job(CreateTrainingJobRequest(body=body))
    jid = created.metadata.id
    assert created.status.phase == "Creating"

    def show() -> str:
        return str(client.show_training_job_details(ShowTrainingJobDetailsRequest(training_job_id=jid)).status.phase)

    assert wait_for(show, "Running") == "Running"
    found = client.list_training_jobs(ListTrainingJobsRequest(body=JobSearches(
        offset=0, limit=10, filters=[Filter(key="phase", operator="in", value=["Running"])])))
    assert found.total == 1 and found.items[0].metadata.id == jid
    client.stop_training_job(StopTrainingJobRequest(training_job_id=jid, body=JobActionType(action_type="terminate")))
    assert wait_for(show, "Terminated") == "Terminated"
    with pytest.raises(ClientRequestException) as err:
        client.stop_training_job(StopTrainingJobRequest(training_job_id=jid,
                                                        body=JobActionType(action_type="terminate")))
    assert err.value.status_code == 409 and err.value.error_code == "ModelArts.2796"
    client.delete_training_job(DeleteTrainingJobRequest(training_job_id=jid))
    with pytest.raises(ClientRequestException) as err:
        show()
    assert err.value.status_code == 400 and err.value.error_code == "ModelArts.2775"


def test_wrong_sk_is_a_401(modelarts_sim_thread: SimThread) -> None:
    from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
    from huaweicloudsdkmodelarts.v1 import JobSearches, ListTrainingJobsRequest

    with pytest.raises(ClientRequestException) as err:
        _ma_client(modelarts_sim_thread.url, sk="WRONG").list_training_jobs(
            ListTrainingJobsRequest(body=JobSearches(offset=0, limit=1)))
    assert err.value.status_code == 401


async def _ma_request(sim: LoopSim, method: str, path: str, body: Any = None, *, sk: str = "TJGDEMOSK",
                      now: datetime | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    raw = json.dumps(body).encode() if body is not None else b""
    hdrs = {"Content-Type": "application/json", "Host": f"127.0.0.1:{sim.port}", **(headers or {})}
    if "X-Auth-Token" not in hdrs:
        bare, _, qs = path.partition("?")
        query = [tuple(p.split("=", 1)) for p in qs.split("&") if p]
        hdrs = sign(method, bare, query, hdrs, raw, "TJGDEMOAK", sk, now=now)
    async with aiohttp.ClientSession() as s, s.request(method, sim.url + path, data=raw or None,
                                                       headers=hdrs) as r:
        return r.status, await r.json()


async def test_modelarts_auth_rules(modelarts_sim: LoopSim) -> None:
    path = f"/v2/{PROJECT}/training-job-searches"
    assert (await _ma_request(modelarts_sim, "POST", path, {}))[0] == 200
    old = datetime.now(UTC) - timedelta(minutes=16)
    status, body = await _ma_request(modelarts_sim, "POST", path, {}, now=old)
    assert status == 401 and "15 minutes" in body["error_msg"]
    assert (await _ma_request(modelarts_sim, "POST", path, {}, sk="nope"))[0] == 401
    assert (await _ma_request(modelarts_sim, "POST", path, {}, headers={"X-Auth-Token": "bad"}))[0] == 401
    assert (await _ma_request(modelarts_sim, "POST", path, {},
                              headers={"X-Auth-Token": "tjg-demo-iam-token"}))[0] == 200
    async with aiohttp.ClientSession() as s, s.post(modelarts_sim.url + path, json={}) as r:
        assert r.status == 401 and r.headers.get("X-Request-Id")


def ma_body(name: str, flavor: str = "modelarts.vm.cpu.2u", **env: str) -> dict[str, Any]:
    return {"kind": "job", "metadata": {"name": name},
            "algorithm": {"engine": {"image_url": "x"}, "command": "true", "environments": env},
            "spec": {"resource": {"flavor_id": flavor, "node_count": 2}}}


async def test_modelarts_errors_and_lifecycle(modelarts_sim: LoopSim) -> None:
    jobs = f"/v2/{PROJECT}/training-jobs"
    status, created = await _ma_request(modelarts_sim, "POST", jobs, ma_body("a1", SIM_RUN_SECONDS="0.5"))
    assert status == 201 and created["status"]["tasks"] == ["worker-0", "worker-1"]
    status, dup = await _ma_request(modelarts_sim, "POST", jobs, ma_body("a1"))
    assert (status, dup["error_code"]) == (400, "ModelArts.2751")
    status, bad = await _ma_request(modelarts_sim, "POST", jobs, ma_body("a2", flavor="no.such"))
    assert (status, bad["error_code"]) == (400, "ModelArts.2781")
    status, missing = await _ma_request(modelarts_sim, "GET", f"{jobs}/nope")
    assert (status, missing["error_code"]) == (400, "ModelArts.2775")
    jid = created["metadata"]["id"]
    for _ in range(100):
        _, job = await _ma_request(modelarts_sim, "GET", f"{jobs}/{jid}")
        if job["status"]["phase"] == "Completed":
            break
        await asyncio.sleep(0.02)
    assert job["status"]["phase"] == "Completed" and job["status"]["secondary_phase"] == "Completed"
    status, logs = await _ma_request(modelarts_sim, "GET", f"{jobs}/{jid}/tasks/worker-1/logs/preview")
    assert status == 200 and "worker-1" in logs["content"] and logs["current_size"] == len(logs["content"])
    status, evs = await _ma_request(modelarts_sim, "GET", f"{jobs}/{jid}/events?limit=100")
    phases = [e["message"].split()[-1] for e in evs["events"] if e["message"].startswith("Training job phase")]
    assert phases == ["Creating", "Pending", "Running", "Completed"]
    # Beside the phase changes, the documented event of a job waiting for resources.
    assert "The training job is queuing and awaiting resource allocation." in [e["message"] for e in evs["events"]]
    _, failed = await _ma_request(modelarts_sim, "POST", jobs, ma_body("f1", SIM_OUTCOME="abnormal",
                                                                       SIM_RUN_SECONDS="0"))
    for _ in range(100):
        _, job = await _ma_request(modelarts_sim, "GET", f"{jobs}/{failed['metadata']['id']}")
        if job["status"]["phase"] not in ("Creating", "Pending", "Running"):
            break
        await asyncio.sleep(0.02)
    assert job["status"]["phase"] == "Abnormal"


async def test_modelarts_search_filters_sort_and_pages(modelarts_sim: LoopSim) -> None:
    jobs = f"/v2/{PROJECT}/training-jobs"
    for i in range(7):
        await _ma_request(modelarts_sim, "POST", jobs, ma_body(f"s-{i}", SIM_OUTCOME="hang"))
    search = f"/v2/{PROJECT}/training-job-searches"
    _, page = await _ma_request(modelarts_sim, "POST", search, {"offset": 0, "limit": 3, "order": "asc",
                                                                "sort_by": "create_time"})
    assert page["total"] == 7 and [i["metadata"]["name"] for i in page["items"]] == ["s-0", "s-1", "s-2"]
    # offset is the page number, as the SDK documents JobSearches.offset: page 2 of 3 per page is the 7th job.
    _, page = await _ma_request(modelarts_sim, "POST", search, {"offset": 2, "limit": 3, "order": "asc"})
    assert [i["metadata"]["name"] for i in page["items"]] == ["s-6"]
    _, f = await _ma_request(modelarts_sim, "POST", search, {"filters": [
        {"key": "name", "operator": "in", "value": ["s-1", "s-4"]}]})
    assert sorted(i["metadata"]["name"] for i in f["items"]) == ["s-1", "s-4"]
    _, f = await _ma_request(modelarts_sim, "POST", search, {"limit": 50, "filters": [
        {"key": "name", "operator": "not", "value": ["s-1"]}, {"key": "name", "operator": "like", "value": ["s-"]}]})
    assert f["total"] == 6
    now = int(time.time() * 1000)
    _, f = await _ma_request(modelarts_sim, "POST", search, {"filters": [
        {"key": "create_time", "operator": "between", "value": [now - 60000, now + 1000]}]})
    assert f["total"] == 7
    status, _bad = await _ma_request(modelarts_sim, "POST", search, {"limit": 51})
    assert status == 400


class RunaiRaw:
    """Plain HTTP against the Run:ai simulator, with a token."""

    def __init__(self, sim: LoopSim, session: aiohttp.ClientSession) -> None:
        self.sim = sim
        self.s = session
        self.token = ""

    async def login(self, grant: str = "client_credentials") -> int:
        body = ({"grantType": grant, "clientID": "tjg-demo", "clientSecret": "tjg-demo-secret"} if
                grant == "client_credentials" else {"grantType": "app_token", "AppId": "tjg-demo",
                                                    "AppSecret": "tjg-demo-secret"})
        async with self.s.post(self.sim.url + "/api/v1/token", json=body) as r:
            if r.status == 200:
                self.token = (await r.json())["accessToken"]
            return r.status

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.s.request(method, self.sim.url + path, json=body,
                                  headers={"Authorization": f"Bearer {self.token}"}) as r:
            return r.status, await r.json()


def training(name: str, **env: str) -> dict[str, Any]:
    return {"name": name, "projectId": "1", "clusterId": CLUSTER,
            "spec": {"image": "x", "environmentVariables": [{"name": k, "value": v} for k, v in env.items()]}}


async def test_runai_token_rules() -> None:
    sim = await start_loop_sim("runai", token_ttl=1)
    other = await start_loop_sim("runai")
    try:
        async with aiohttp.ClientSession() as s:
            c = RunaiRaw(sim, s)
            assert await c.login("app_token") == 200
            assert (await c.call("GET", "/api/v1/workloads"))[0] == 200
            foreign = RunaiRaw(other, s)
            await foreign.login()
            c2 = RunaiRaw(sim, s)
            c2.token = foreign.token
            assert (await c2.call("GET", "/api/v1/workloads"))[0] == 401
            async def expired() -> Any:  # the token's 1 s lifetime runs out on the simulator's clock
                status, body = await c.call("GET", "/api/v1/workloads")
                return body if status == 401 else None

            body = await eventually(expired, within=10, step=0.05)
            assert body and "expired" in body["message"]
            c.token = ""
            assert (await c.call("GET", "/api/v1/workloads"))[0] == 401
            async with s.post(sim.url + "/api/v1/token", json={"grantType": "client_credentials",
                                                               "clientID": "tjg-demo", "clientSecret": "x"}) as r:
                assert r.status == 400  # the token operation documents 200, 400, 500 and 503 only
    finally:
        await sim.runner.cleanup()
        await other.runner.cleanup()


async def test_runai_validation_duplicates_and_lists(runai_sim: LoopSim) -> None:
    async with aiohttp.ClientSession() as s:
        c = RunaiRaw(runai_sim, s)
        await c.login()
        status, err = await c.call("POST", "/api/v1/workloads/trainings",
                                   {"name": "x", "projectId": "1", "clusterId": CLUSTER,
                                    "spec": {"compute": {"gpuDevicesRequest": "two"}}})
        assert status == 400 and err["code"] == 400
        assert {"field": "spec.compute.gpuDevicesRequest", "details": "must be of type integer"} \
            .items() <= err["complianceIssues"][0].items()
        status, err = await c.call("POST", "/api/v1/workloads/trainings", {"projectId": "1", "clusterId": CLUSTER})
        assert status == 400 and any(i["field"] == "name" for i in err["complianceIssues"])
        assert (await c.call("POST", "/api/v1/workloads/trainings", training("t1", SIM_OUTCOME="hang")))[0] == 202
        status, err = await c.call("POST", "/api/v1/workloads/trainings", training("t1"))
        assert status == 400 and err["complianceIssues"][0]["field"] == "name"  # the create documents no 409
        for i in range(5):
            await c.call("POST", "/api/v1/workloads/trainings", training(f"u{i}", SIM_OUTCOME="hang"))
        dist = {**training("d1", SIM_OUTCOME="hang"), "masterSpecSameAsWorker": True}
        dist["spec"].update(distributedFramework="PyTorch", numWorkers=2)
        assert (await c.call("POST", "/api/v1/workloads/distributed", dist))[0] == 202
        _, page = await c.call("GET", "/api/v1/workloads?limit=2&offset=0&sortBy=name&sortOrder=desc")
        assert [w["name"] for w in page["workloads"]] == ["u4", "u3"] and page["next"] == 2
        _, page = await c.call("GET", "/api/v1/workloads?filterBy=name%3D@u,name!%3Du2")
        assert sorted(w["name"] for w in page["workloads"]) == ["u0", "u1", "u3", "u4"]
        _, page = await c.call("GET", "/api/v1/workloads?filterBy=type%3D%3DDistributed")
        assert [w["name"] for w in page["workloads"]] == ["d1"]
        _, page = await c.call("GET", "/api/v1/workloads?filterBy=name%3D$1")
        assert sorted(w["name"] for w in page["workloads"]) == ["d1", "t1", "u1"]
        _, cnt = await c.call("GET", "/api/v1/workloads/count?filterBy=name%3D%5Eu")
        assert cnt == {"count": 5}
        # The list documents no 400, but a bad parameter is one all the same (a 500 would have a client retry
        # what never succeeds: issue 30), in the error shape.
        for bad in ("limit=501", "filterBy=bogus", "sortOrder=up"):
            status, err = await c.call("GET", f"/api/v1/workloads?{bad}")
            assert status == 400 and set(err) >= {"code", "message"}
        wid = page["workloads"][0]["id"]
        status, evs = await c.call("GET", f"/api/v1/workloads/{wid}/events")
        assert status == 200 and evs["events"][-1]["reason"] == "Creating"  # newest first by default


async def test_runai_lifecycle_outcomes(runai_sim: LoopSim) -> None:
    async with aiohttp.ClientSession() as s:
        c = RunaiRaw(runai_sim, s)
        await c.login()
        ids = {}
        for name, outcome in (("ok", "completed"), ("bad", "failed"), ("stuck", "hang")):
            _, r = await c.call("POST", "/api/v1/workloads/trainings",
                                training(name, SIM_OUTCOME=outcome, SIM_RUN_SECONDS="1"))
            ids[name] = r["workloadId"]

        async def ended() -> dict[str, str]:  # the two that end have ended (speed 20: 1 s of job time is 0.05 s)
            phases = {n: (await c.call("GET", f"/api/v1/workloads/{i}"))[1]["phase"] for n, i in ids.items()}
            return phases if phases["ok"] in ("Completed", "Failed") and phases["bad"] in ("Completed", "Failed") \
                else {}

        phases = await eventually(ended, within=30)
        assert phases == {"ok": "Completed", "bad": "Failed", "stuck": "Running"}
        # No 409 is documented for suspend: an ended workload accepts it and stays as it was.
        status, _ = await c.call("POST", f"/api/v1/workloads/trainings/{ids['ok']}/suspend")
        assert status == 202
        assert (await c.call("GET", f"/api/v1/workloads/{ids['ok']}"))[1]["phase"] == "Completed"
        _, evs = await c.call("GET", f"/api/v1/workloads/{ids['ok']}/events?sortOrder=asc")
        assert [e["reason"] for e in evs["events"]] == ["Creating", "Pending", "Initializing", "Running",
                                                          "Completed"]


async def test_a_repeated_list_query_sees_every_write_and_phase_change(runai_sim: LoopSim) -> None:
    # The simulator answers a repeated list query from memory; nothing it answers may be stale.
    async with aiohttp.ClientSession() as s:
        c = RunaiRaw(runai_sim, s)
        await c.login()
        q = "/api/v1/workloads?filterBy=name%3D%5Ecache-&sortBy=createdAt&limit=50"
        assert (await c.call("GET", q))[1]["workloads"] == []
        _, made = await c.call("POST", "/api/v1/workloads/trainings", training("cache-a", SIM_OUTCOME="hang"))
        seen = []
        for _ in range(500):
            _, page = await c.call("GET", q)
            seen.append(page["workloads"][0]["phase"])
            if seen[-1] == "Running":
                break
            await asyncio.sleep(0.01)
        assert seen[0] != "Running" and seen[-1] == "Running"  # the same query, answered anew as phases moved
        runai_sim.app[RUNAI_KEY].bulk_create(3, project="1", cluster=CLUSTER, prefix="cache-bulk")
        assert len((await c.call("GET", q))[1]["workloads"]) == 4
        assert (await c.call("DELETE", f"/api/v1/workloads/trainings/{made['workloadId']}"))[0] == 202
        _, page = await c.call("GET", q)
        assert [w["phase"] for w in page["workloads"] if w["name"] == "cache-a"] in ([], ["Deleting"])


def fault_sequence(seed: int) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        sim = await start_loop_sim("runai", seed=seed, faults=parse_faults("http503=0.2,http429=0.1,reset=0.1"))
        try:
            async with aiohttp.ClientSession() as s:
                for _ in range(60):
                    try:
                        async with s.get(sim.url + "/api/v1/workloads") as r:
                            await r.read()
                    except aiohttp.ClientError:
                        pass
                async with s.get(sim.url + "/_sim/fault-log") as r:
                    log: list[dict[str, Any]] = await r.json()
                    return log
        finally:
            await sim.runner.cleanup()

    return asyncio.run(run())


def test_a_seeded_fault_run_repeats_exactly() -> None:
    first, second = fault_sequence(7), fault_sequence(7)
    assert first == second
    assert {f["fault"] for f in first} == {"http503", "http429", "reset"}
    assert fault_sequence(8) != first


async def test_faults_switch_at_run_time_and_drop_after_commit(runai_sim: LoopSim) -> None:
    async with aiohttp.ClientSession() as s:
        c = RunaiRaw(runai_sim, s)
        await c.login()
        async with s.put(runai_sim.url + "/_sim/faults", json={"drop_after_commit": 1.0}) as r:
            assert r.status == 200 and await r.json() == {"drop_after_commit": 1.0}
        with pytest.raises(aiohttp.ClientError):
            await c.call("POST", "/api/v1/workloads/trainings", training("lost-reply", SIM_OUTCOME="hang"))
        async with s.put(runai_sim.url + "/_sim/faults", json={}) as r:
            assert await r.json() == {}
        _, page = await c.call("GET", "/api/v1/workloads")
        assert [w["name"] for w in page["workloads"]] == ["lost-reply"]  # applied, though the reply was lost
        async with s.put(runai_sim.url + "/_sim/faults", json={"http503": 2}) as r:
            assert r.status == 400
        async with s.get(runai_sim.url + "/_sim/stats") as r:
            stats = await r.json()
        assert stats["requests"]["POST /api/v1/workloads/trainings"] == 1
        assert stats["requests"]["GET /api/v1/workloads"] == 1


async def test_429_carries_retry_after(modelarts_sim: LoopSim) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.put(modelarts_sim.url + "/_sim/faults", json={"http429": 1}) as r:
            assert r.status == 200
        async with s.post(modelarts_sim.url + f"/v2/{PROJECT}/training-job-searches", json={}) as r:
            assert r.status == 429 and r.headers["Retry-After"] == "1"
            assert (await r.json())["error_code"] == "APIGW.0308"
        async with s.get(modelarts_sim.url + "/_sim/flavors") as r:
            assert "modelarts.vm.cpu.2u" in await r.json()


async def test_twenty_thousand_jobs_list_by_page(runai_sim: LoopSim, modelarts_sim: LoopSim) -> None:
    rsim = runai_sim.app[RUNAI_KEY]
    rsim.bulk_create(20_000, project="1", cluster=CLUSTER)
    async with aiohttp.ClientSession() as s:
        c = RunaiRaw(runai_sim, s)
        await c.login()
        _, page = await c.call("GET", "/api/v1/workloads?limit=500&offset=19800&filterBy=type%3D%3DTraining")
        assert len(page["workloads"]) == 200 and "next" not in page
        _, cnt = await c.call("GET", "/api/v1/workloads/count")
        assert cnt["count"] == 20_000
    msim = modelarts_sim.app[MA_KEY]
    msim.bulk_create(20_000, project=PROJECT)
    _, res = await _ma_request(modelarts_sim, "POST", f"/v2/{PROJECT}/training-job-searches",
                               {"offset": 666, "limit": 30})  # the page number: jobs 19,980 to the end
    assert res["total"] == 20_000 and res["count"] == 20


@pytest.mark.parametrize("search_offset", ["pages", "items"])
async def test_the_modelarts_adapter_pages_through_every_job_whichever_way_offset_is_read(
        search_offset: str, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 30: the SDK documents JobSearches.offset as a page number (from 0, limit 1-50 per page); the
    adapter pages so, and notices a control plane that reads it as an item offset (its next page repeats the
    last one's jobs), then pages by items: every job exactly once either way."""
    from gateway.core.adapter import REGISTRY
    from tests.conftest import base_config
    from tests.procs import listed_jobs

    sim = await start_loop_sim("modelarts", speed=20.0, search_offset=search_offset)
    try:
        for i in range(123):
            status, _ = await _ma_request(sim, "POST", f"/v2/{PROJECT}/training-jobs",
                                          ma_body(f"p-{i}", SIM_OUTCOME="hang"))
            assert status == 201
        cfg = base_config(ma_url=f"http://127.0.0.1:{sim.port}")
        async with aiohttp.ClientSession() as s:
            adapter = REGISTRY.create(cfg.backend("modelarts"), s)
            seen = [j.handle.vendor_name for j in await listed_jobs(adapter, 500)]  # (the adapter asks 50 a page)
        assert sorted(seen) == sorted(f"p-{i}" for i in range(123)), (len(seen), len(set(seen)))
        assert adapter._paging == search_offset
    finally:
        await sim.runner.cleanup()
