"""The start-up phase: bring the records back in line with the host before serving any request.

Assumptions, as containerd's restart.go writes them down:
- records are written before the resources they describe are made (a name is claimed first), so a record can
  outlive a crash in the middle of its creation, never the other way round;
- a container whose monitor (conmon) recorded an exit has exited, whatever hulld saw last;
- /run (storage.state) does not survive a reboot, /var/lib (storage.root) does.

What it does, logging rather than failing on any one item:
- a container record that never got a PID (the crash hit CreateContainer) is garbage-collected with its
  directory and any runtime state; one the runtime no longer knows, with no exit recorded, becomes UNKNOWN;
- container directories without a record are unmounted and removed;
- a READY sandbox whose pinned namespaces are gone (a reboot), whose infra container exited, or whose infra
  container a crash left unstarted, becomes NOTREADY (the kubelet then stops it, and StopPodSandbox cleans up).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from hulld.containers import Containers
from hulld.node import mounts
from hulld.sandboxes import Sandboxes

logger = logging.getLogger(__name__)


def recover(sandboxes: Sandboxes, containers: Containers) -> None:
    for sandbox in sandboxes.records.list():
        missing = [path for path in sandbox.status.namespaces.values() if not Path(path).exists()]
        if sandbox.status.state == "READY" and missing:
            logger.warning("sandbox %s: namespaces %s are gone; marking it not ready", sandbox.id, missing)
            sandboxes.records.set(sandbox.id, state="NOTREADY", network={})
        elif sandbox.status.state == "READY" and sandbox.status.infra_id and not sandbox.status.infra_pid:
            # The crash hit RunPodSandbox while it made the infra: its containers could not join the pod.
            logger.warning("sandbox %s: its infra container was never started; marking it not ready", sandbox.id)
            sandboxes.records.set(sandbox.id, state="NOTREADY")
        else:
            sandboxes.refresh(sandbox)  # its infra container may have exited while hulld was down
    for record in containers.records.list():
        try:
            if record.status.pid == 0 and record.status.state == "CREATED":
                logger.warning("container %s: creation was interrupted; removing what was made", record.id)
                containers.remove(record.id)
                continue
            record = containers.refresh(record)
            handler = sandboxes.handlers.find(record.handler)
            if record.status.state == "RUNNING" and handler is not None and not handler.running(record.id):
                record = containers.refresh(record)
                if record.status.state == "RUNNING":
                    logger.warning("container %s: the runtime lost it and no exit was recorded", record.id)
                    containers.records.set(
                        record.id,
                        state="UNKNOWN",
                        reason="Unknown",
                        message="the runtime no longer knows this container",
                    )
        except Exception:
            logger.exception("container %s: recovery failed; leaving it as it is", record.id)
    known = {record.id for record in containers.records.list()}
    if containers.files.is_dir():
        for directory in containers.files.iterdir():
            if directory.name not in known:
                logger.warning("removing orphaned container directory %s", directory)
                mounts.unmount(directory / "rootfs")
                shutil.rmtree(directory, ignore_errors=True)
