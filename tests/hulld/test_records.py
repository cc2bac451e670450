"""hulld's records: identity frozen, status changed only through the table, one versioned JSON scheme for
sandboxes, containers and images, and the records earlier builds wrote (version 1, status fields inline) still read."""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from hulld import errors
from hulld.store.records import (
    ContainerRecord,
    ContainerStatus,
    ImageRecord,
    ImageStatus,
    Record,
    SandboxRecord,
    SandboxStatus,
)
from hulld.store.table import Table


def container(name: str = "web", **status: object) -> ContainerRecord:
    return ContainerRecord(
        id=name * 4,
        name=f"{name}_pod",
        sandbox_id="s" * 64,
        metadata={"name": name, "attempt": 0},
        labels={},
        annotations={},
        image="busybox",
        image_id="sha256:" + "a" * 64,
        handler="runc",
        created_at=1,
        log_path="",
        mounts=({"containerPath": "/data", "hostPath": "/srv"},),
        status=ContainerStatus(**status),  # type: ignore[arg-type]
    )


# A sandbox record exactly as earlier builds wrote it: version 1, the status beside the configuration.
VERSION_1_SANDBOX = {
    "version": 1,
    "kind": "SandboxRecord",
    "id": "f" * 64,
    "name": "web_default_uid_0",
    "metadata": {"name": "web", "namespace": "default", "uid": "uid", "attempt": 0},
    "labels": {"app": "web"},
    "annotations": {},
    "handler": "runsc",
    "created_at": 1700000000000000000,
    "hostname": "web",
    "log_directory": "/var/log/pods/web",
    "cgroup_parent": "",
    "sysctls": {},
    "port_mappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}],
    "host_network": False,
    "host_ipc": False,
    "host_pid": False,
    "namespaces": {"net": "/run/hulld/ns/net/f", "ipc": "/run/hulld/ns/ipc/f"},
    "private": False,
    "shared_pid": True,
    "infra_id": "e" * 64,
    "state": "READY",
    "ip": "10.0.0.5",
    "additional_ips": ["fd00::5"],
    "network": {"config": {}, "result": {}},
    "infra_pid": 4242,
    "resources": {},
}


def test_every_kind_round_trips_through_its_json() -> None:
    records: list[Record[Any]] = [
        container(state="EXITED", exit_code=3, reason="Error"),
        SandboxRecord.from_json(json.dumps(VERSION_1_SANDBOX)),
        ImageRecord(
            id="sha256:" + "b" * 64,
            layers=("sha256:" + "c" * 64,),
            size=10,
            config={"Cmd": ["sh"]},
            manifest_digest="sha256:" + "d" * 64,
            status=ImageStatus(repo_tags=("busybox:1",), repo_digests=("busybox@sha256:" + "d" * 64,)),
        ),
    ]
    for record in records:
        text = record.to_json()
        assert json.loads(text)["version"] == 2
        assert type(record).from_json(text) == record


def test_a_version_1_record_is_read_with_its_status_moved_into_status() -> None:
    record = SandboxRecord.from_json(json.dumps(VERSION_1_SANDBOX))
    assert record.cgroup_driver == "cgroupfs"  # the only driver of the builds that wrote it
    assert record.status == SandboxStatus(
        state="READY",
        namespaces={"net": "/run/hulld/ns/net/f", "ipc": "/run/hulld/ns/ipc/f"},
        ip="10.0.0.5",
        additional_ips=("fd00::5",),
        network={"config": {}, "result": {}},
        infra_id="e" * 64,
        infra_pid=4242,
    )
    assert (record.name, record.handler, record.shared_pid) == ("web_default_uid_0", "runsc", True)
    assert record.port_mappings == ({"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""},)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 3}, "unknown version 3"),
        ({"version": None}, "unknown version None"),
        ({"kind": "ContainerRecord"}, "a ContainerRecord record, not a SandboxRecord"),
    ],
)
def test_records_of_another_version_or_kind_are_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SandboxRecord.from_json(json.dumps({**VERSION_1_SANDBOX, **change}))


def test_identity_is_frozen() -> None:
    record = container()
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.handler = "runsc"  # type: ignore[misc]


def test_the_table_changes_only_the_status_of_the_record_as_it_is_now(tmp_path: Path) -> None:
    table = Table(tmp_path, ContainerRecord)
    stale = table.add(container())
    table.set(stale.id, state="EXITED", exit_code=3)
    # A start that raced the exit: written over the caller's old copy, it would bring RUNNING back. The table
    # hands the change the status as it is now, which has the exit, so the start changes nothing.
    seen = []

    def started(status: ContainerStatus) -> ContainerStatus:
        seen.append(status.state)
        return status if status.state == "EXITED" else dataclasses.replace(status, state="RUNNING")

    before, after = table.update(stale.id, started)
    assert seen == ["EXITED"]
    assert after is before
    assert (after.status.state, after.status.exit_code, after.handler) == ("EXITED", 3, "runc")
    assert Table(tmp_path, ContainerRecord).get(stale.id) == after  # what is on disk


def test_a_removed_record_never_comes_back(tmp_path: Path) -> None:
    table = Table(tmp_path, ContainerRecord)
    record = table.add(container())
    table.remove(record)
    with pytest.raises(errors.NotFound):
        table.set(record.id, state="RUNNING")
    assert list(tmp_path.iterdir()) == []


def test_names_are_unique_per_table(tmp_path: Path) -> None:
    table = Table(tmp_path, ContainerRecord)
    first = table.add(container())
    with pytest.raises(errors.AlreadyExists, match=first.id):
        table.add(dataclasses.replace(container(), id="x" * 64))


def test_concurrent_status_changes_are_all_kept(tmp_path: Path) -> None:
    """Many threads each bump one counter-like field; a lost update would show as a smaller total."""
    table = Table(tmp_path, ContainerRecord)
    record = table.add(container())

    def bump() -> None:
        for _ in range(50):
            table.update(record.id, lambda status: dataclasses.replace(status, exit_code=status.exit_code + 1))

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert table.get(record.id).status.exit_code == 400
    assert Table(tmp_path, ContainerRecord).get(record.id).status.exit_code == 400


def test_unreadable_files_are_reported_and_skipped(tmp_path: Path) -> None:
    table = Table(tmp_path, ContainerRecord)
    kept = table.add(container())
    (tmp_path / "torn.json").write_text('{"version": 2, "kind": "ContainerRecord", "id": ')
    reloaded = Table(tmp_path, ContainerRecord)
    assert [record.id for record in reloaded.list()] == [kept.id]
    assert reloaded.unreadable == [tmp_path / "torn.json"]
