"""Conversions between hulld's records and the CRI's messages, and the CRI's list filters: the one place that
knows both shapes. Requests reach the domain as protobuf's JSON mapping (dicts, camelCase keys)."""

from __future__ import annotations

from typing import Any

from cri_api.v1 import api_pb2 as cri
from google.protobuf import json_format

from hulld.store.records import ContainerRecord, SandboxRecord

CONTAINER_STATES = {
    "CREATED": cri.CONTAINER_CREATED,
    "RUNNING": cri.CONTAINER_RUNNING,
    "EXITED": cri.CONTAINER_EXITED,
    "UNKNOWN": cri.CONTAINER_UNKNOWN,
}
SANDBOX_STATES = {"READY": cri.SANDBOX_READY, "NOTREADY": cri.SANDBOX_NOTREADY}


def as_dict(message: Any) -> dict[str, Any]:
    data: dict[str, Any] = json_format.MessageToDict(message)
    return data


def labels_match(labels: dict[str, str], selector: Any) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def sandbox_message(record: SandboxRecord) -> Any:
    return cri.PodSandbox(
        id=record.id,
        metadata=cri.PodSandboxMetadata(**record.metadata),
        state=SANDBOX_STATES[record.status.state],
        created_at=record.created_at,
        labels=record.labels,
        annotations=record.annotations,
        runtime_handler=record.handler,
    )


def container_message(record: ContainerRecord) -> Any:
    return cri.Container(
        id=record.id,
        pod_sandbox_id=record.sandbox_id,
        metadata=cri.ContainerMetadata(**record.metadata),
        image=cri.ImageSpec(image=record.image),
        image_ref=record.image_id,
        image_id=record.image_id,
        state=CONTAINER_STATES[record.status.state],
        created_at=record.created_at,
        labels=record.labels,
        annotations=record.annotations,
    )


def container_status(record: ContainerRecord) -> Any:
    return cri.ContainerStatus(
        id=record.id,
        metadata=cri.ContainerMetadata(**record.metadata),
        state=CONTAINER_STATES[record.status.state],
        created_at=record.created_at,
        started_at=record.status.started_at,
        finished_at=record.status.finished_at,
        exit_code=record.status.exit_code,
        image=cri.ImageSpec(image=record.image),
        image_ref=record.image_id,
        image_id=record.image_id,
        reason=record.status.reason,
        message=record.status.message,
        labels=record.labels,
        annotations=record.annotations,
        log_path=record.log_path,
        mounts=[json_format.ParseDict(mount, cri.Mount(), ignore_unknown_fields=True) for mount in record.mounts],
    )
