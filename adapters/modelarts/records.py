"""ModelArts' records as the gateway reads them, decoded from the response text in one step (msgspec).

Only the fields the adapter reads are declared (names and types as in Huawei's SDK models: JobResponse,
Status, TaskStatuses, ListTrainingJobsResponse, ShowServiceResponse...); the decoder skips the rest without
building it, and reads leniently (`Response.decode`): a number sent as a string still reads.
"""

from __future__ import annotations

import msgspec


class TaskStatus(msgspec.Struct):
    task: str | None = None
    exit_code: int | None = None
    message: str | None = None


class RunningRecord(msgspec.Struct):
    start_at: int | None = None
    end_at: int | None = None
    end_reason: str | None = None


class JobStatusPart(msgspec.Struct):
    phase: str | None = None
    secondary_phase: str | None = None
    task_statuses: list[TaskStatus] | None = None
    running_records: list[RunningRecord] | None = None


class JobMetadata(msgspec.Struct):
    id: str | None = None
    name: str | None = None
    description: str | None = None
    workspace_id: str | None = None
    create_time: int | None = None


class TrainingJob(msgspec.Struct):
    """A training job (GET .../training-jobs/{id}, an item of a job search)."""

    metadata: JobMetadata = msgspec.field(default_factory=JobMetadata)
    status: JobStatusPart = msgspec.field(default_factory=JobStatusPart)


class JobSearchPage(msgspec.Struct):
    """POST .../training-job-searches."""

    total: int = 0
    count: int | None = None
    items: list[TrainingJob] = []


class PredictUrl(msgspec.Struct):
    urls: list[str] | None = None


class InstanceGroup(msgspec.Struct):
    count: int | None = None
    running_count: int | None = None


class ServiceVersion(msgspec.Struct):
    instance_groups: list[InstanceGroup] | None = None


class Service(msgspec.Struct):
    """A real-time service (GET .../services/{id})."""

    id: str | None = None
    name: str | None = None
    status: str | None = None
    failure_reason: str | None = None
    description: str | None = None
    workspace_id: str | None = None
    predict_url: list[PredictUrl] | None = None
    version: ServiceVersion | None = None
