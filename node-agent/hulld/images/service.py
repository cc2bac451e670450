"""Image operations behind the CRI ImageService: pull, list, status, remove, filesystem usage.

Concurrent pulls of one reference share one download. A pull writes nothing visible until the image is
complete: blobs and layers land by atomic rename after verification, the record last.
"""

from __future__ import annotations

import concurrent.futures
import json
import platform
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hulld import errors
from hulld.config import Config
from hulld.images import reference, registry, unpack
from hulld.images.store import ImageStore
from hulld.metrics import Metrics
from hulld.store.records import ImageRecord, ImageStatus

ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64"}


def this_platform() -> tuple[str, str]:
    machine = platform.machine()
    return "linux", ARCHITECTURES.get(machine, machine)


class ImageService:
    def __init__(
        self,
        config: Config,
        store: ImageStore,
        metrics: Metrics,
        in_use: Callable[[str], bool] = lambda image_id: False,
    ) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.in_use = in_use
        self.pools = registry.Pools()
        self._pulls: dict[str, concurrent.futures.Future[ImageRecord]] = {}
        self._lock = threading.Lock()
        metrics.images.set(len(store.list()))

    def reconfigure(self, config: Config) -> None:
        self.config = config

    # --- pulling ----------------------------------------------------------------------------------------------

    def pull(self, image: str, credentials: registry.Credentials) -> ImageRecord:
        ref = reference.parse(image)
        key = str(ref)
        with self._lock:
            running = self._pulls.get(key)
            owner = running is None
            if running is None:
                running = self._pulls[key] = concurrent.futures.Future()
        if not owner:
            return running.result()  # another request is pulling this very image: share its result
        started = time.monotonic()
        try:
            record = self._pull(ref, credentials)
        except BaseException as error:
            result = type(error).__name__ if isinstance(error, errors.HulldError) else "InternalError"
            self.metrics.image_pulls.labels(result).inc()
            self.metrics.image_pull_duration.labels(result).observe(time.monotonic() - started)
            running.set_exception(error)
            raise
        finally:
            with self._lock:
                self._pulls.pop(key, None)
        self.metrics.image_pulls.labels("ok").inc()
        self.metrics.image_pull_duration.labels("ok").observe(time.monotonic() - started)
        self.metrics.images.set(len(self.store.list()))
        running.set_result(record)
        return record

    def _pull(self, ref: reference.Reference, credentials: registry.Credentials) -> ImageRecord:
        limits = self.config.images
        session = registry.Session(self.config, ref, credentials, self.pools)
        top = session.manifest(ref.digest or ref.tag or "latest", limits.max_manifest_bytes)
        manifest = top
        if top.media_type in registry.INDEX_TYPES:
            manifest = session.manifest(self._choose(ref, top.data), limits.max_manifest_bytes)
        data = manifest.data
        config_digest = data["config"]["digest"]
        layers = data.get("layers", [])
        if len(layers) > limits.max_layers:
            raise errors.FailedPrecondition(
                f"{ref}: the image has {len(layers)} layers, more than {limits.max_layers} (images.max_layers)"
            )
        self._keep(manifest.digest, manifest.body)
        self._download(
            session, config_digest, _bounded(data["config"], limits.max_config_bytes, "images.max_config_bytes", ref)
        )
        image_config = json.loads(self.store.blob_path(config_digest).read_bytes())
        diff_ids = image_config.get("rootfs", {}).get("diff_ids", [])
        if len(diff_ids) != len(layers):
            raise errors.FailedPrecondition(f"{ref}: manifest has {len(layers)} layers, config {len(diff_ids)}")
        unpack_limits = unpack.Limits(max_bytes=limits.max_layer_bytes, max_entries=limits.max_layer_entries)
        for layer, diff_id in zip(layers, diff_ids, strict=True):
            self._download(
                session, layer["digest"], _bounded(layer, limits.max_layer_bytes, "images.max_layer_bytes", ref)
            )
            if not self.store.has_layer(diff_id):
                scratch = self.store.ingest_dir()
                try:
                    unpack.unpack(self.store.blob_path(layer["digest"]), scratch / "layer", diff_id, unpack_limits)
                    self.store.commit_layer(scratch / "layer", diff_id)
                finally:
                    shutil.rmtree(scratch, ignore_errors=True)
        record = ImageRecord(
            id=config_digest,
            layers=tuple(diff_ids),
            size=int(data["config"]["size"]) + sum(int(layer["size"]) for layer in layers),
            config=image_config.get("config") or {},
            manifest_digest=manifest.digest,
            status=ImageStatus(
                repo_tags=(ref.tagged,) if ref.tagged else (), repo_digests=(f"{ref.name}@{top.digest}",)
            ),
        )
        return self.store.add(record)

    def _choose(self, ref: reference.Reference, index: dict[str, Any]) -> str:
        os_name, architecture = this_platform()
        for entry in index.get("manifests", []):
            wanted = entry.get("platform", {})
            if wanted.get("os") == os_name and wanted.get("architecture") == architecture:
                return str(entry["digest"])
        raise errors.NotFound(f"{ref}: no image for {os_name}/{architecture} in its index")

    def _keep(self, digest: str, body: bytes) -> None:
        if not self.store.has_blob(digest):
            with self.store.ingest_file() as temporary:
                temporary.write(body)
            self.store.commit_blob(Path(temporary.name), digest)

    def _download(self, session: registry.Session, digest: str, size: int) -> None:
        if self.store.has_blob(digest):
            return
        with self.store.ingest_file() as temporary:
            try:
                session.fetch_blob(digest, size, temporary, self.metrics.image_pull_bytes.inc)
            except BaseException:
                Path(temporary.name).unlink(missing_ok=True)
                raise
        self.store.commit_blob(Path(temporary.name), digest)

    # --- the rest ---------------------------------------------------------------------------------------------

    def status(self, image: str) -> ImageRecord | None:
        record = self.store.find(image)
        if record is None:
            try:
                record = self.store.find(str(reference.parse(image)))
            except errors.InvalidArgument:
                return None
        return record

    def remove(self, image: str) -> None:
        record = self.status(image)
        if record is None:
            return  # CRI: removing an image that is not there succeeds
        if self.in_use(record.id):
            raise errors.FailedPrecondition(f"image {image} ({record.id}) is used by a container; remove that first")
        self.store.remove(record)
        self.metrics.images.set(len(self.store.list()))


def _bounded(descriptor: dict[str, Any], limit: int, setting: str, ref: reference.Reference) -> int:
    """The size a manifest declares for a blob, refused before the download if it is over its limit."""
    size = int(descriptor["size"])
    if not 0 <= size <= limit:
        raise errors.FailedPrecondition(f"{ref}: blob {descriptor['digest']} of {size} bytes is over {setting}")
    return size
