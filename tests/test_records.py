"""The adapters' typed vendor records: a page is decoded from its text in one step, the fields the adapters
read are typed (leniently: a number sent as a string still reads), the rest is skipped, and an answer that
does not fit is a vendor failure saying where, never a crash of the sync."""

from __future__ import annotations

import json

import pytest

from adapters.http import Response
from adapters.modelarts.records import JobSearchPage, Service
from adapters.runai.records import WorkloadPage
from gateway.core.errors import BackendUnavailable


def test_a_runai_page_decodes_in_one_step_skipping_what_it_does_not_declare() -> None:
    text = json.dumps({"workloads": [
        {"id": "w1", "name": "a", "type": "Training", "phase": "Running", "projectId": "1", "clusterId": "c",
         "allocatedResources": {"gpu": 1}},
        {"id": "w2", "name": "b", "type": "Inference", "phase": "Running", "runningPods": "2",
         "requestedPods": {"number": 3, "min": 1}, "urls": ["http://x/"]}], "next": 2, "total": 9})
    page = Response(200, text.encode(), {}, "runai").decode(WorkloadPage)
    assert [w.id for w in page.workloads] == ["w1", "w2"] and page.next == 2
    assert page.workloads[0].projectId == "1" and page.workloads[0].phase == "Running"
    assert page.workloads[1].runningPods == 2 and page.workloads[1].requestedPods is not None  # "2" reads as 2
    assert page.workloads[1].requestedPods.number == 3


def test_modelarts_records_decode_jobs_and_services() -> None:
    text = json.dumps({"total": 1, "count": 1, "items": [{
        "metadata": {"id": "j1", "name": "n", "workspace_id": "0", "create_time": 1},
        "status": {"phase": "Failed", "task_statuses": [{"task": "worker-0", "exit_code": 137, "message": "OOM"}]}}]})
    page = Response(200, text.encode(), {}, "modelarts").decode(JobSearchPage)
    assert page.total == 1 and page.items[0].status.task_statuses is not None
    assert page.items[0].status.task_statuses[0].exit_code == 137
    svc = Response(200, json.dumps({"id": "s", "status": "running", "version": {"instance_groups": [
        {"count": 2, "running_count": 1}]}}).encode(), {}, "modelarts").decode(Service)
    assert svc.version is not None and svc.version.instance_groups is not None
    assert svc.version.instance_groups[0].running_count == 1


@pytest.mark.parametrize("text", ['{"workloads": "nope"}', '{"workloads": [{"id": ["x"]}]}', "<html>"])
def test_an_answer_that_does_not_fit_is_a_vendor_failure_naming_where(text: str) -> None:
    with pytest.raises(BackendUnavailable) as err:
        Response(200, text.encode(), {}, "runai").decode(WorkloadPage)
    assert err.value.detail.startswith("runai: unexpected answer (WorkloadPage: ")
