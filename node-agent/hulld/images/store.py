"""The image store on disk: content-addressed blobs, unpacked layers, and one record per image.

    <root>/images/blobs/sha256/<hex>      manifests, configs, compressed layers (verified before they land)
    <root>/images/layers/<hex of diff_id> one unpacked layer each, shared by every image that has it
    <root>/images/records/<hex of id>.json one image (``hulld.store.records.ImageRecord``): its ID (the config's
                                          digest), layers and config; tags and digests as its status
    <root>/images/ingest/                 downloads and unpacks in progress; emptied at start-up

Everything lands by an atomic rename, so a crash leaves either nothing or a complete item. Records are kept in a
``hulld.store.table.Table``, as sandboxes and containers are: versioned JSON, a record of an unknown version
refused (and reported), not guessed at.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from hulld import errors
from hulld.store.records import ImageRecord, ImageStatus
from hulld.store.table import Table


def _hex(digest: str) -> str:
    algorithm, _, value = digest.partition(":")
    if algorithm != "sha256" or len(value) != 64 or not all(c in "0123456789abcdef" for c in value):
        raise errors.InvalidArgument(f"not a sha256 digest: {digest!r}")
    return value


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root / "images"
        self.blobs = self.root / "blobs" / "sha256"
        self.layers = self.root / "layers"
        self.records = self.root / "records"
        self.ingest = self.root / "ingest"
        for directory in (self.blobs, self.layers, self.records):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.rmtree(self.ingest, ignore_errors=True)  # half-finished downloads and unpacks of a crashed run
        self.ingest.mkdir(mode=0o700)
        self._lock = threading.RLock()  # a pull's retagging and a removal's collection are one step each
        self._images = Table(self.records, ImageRecord, file_name=_hex)

    # --- blobs and layers -------------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.blobs / _hex(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def ingest_file(self) -> tempfile._TemporaryFileWrapper[bytes]:
        return tempfile.NamedTemporaryFile(dir=self.ingest, delete=False)

    def commit_blob(self, temporary: Path, digest: str) -> None:
        os.replace(temporary, self.blob_path(digest))

    def layer_path(self, diff_id: str) -> Path:
        return self.layers / _hex(diff_id)

    def has_layer(self, diff_id: str) -> bool:
        return self.layer_path(diff_id).is_dir()

    def ingest_dir(self) -> Path:
        return Path(tempfile.mkdtemp(dir=self.ingest))

    def commit_layer(self, unpacked: Path, diff_id: str) -> None:
        try:
            os.rename(unpacked, self.layer_path(diff_id))
        except OSError:
            if not self.has_layer(diff_id):
                raise
            shutil.rmtree(unpacked)  # another pull unpacked the same layer first

    # --- records ----------------------------------------------------------------------------------------------

    def add(self, record: ImageRecord) -> ImageRecord:
        """Store an image; tags it takes from other images move to it (as ``docker pull`` retags)."""
        taken = set(record.status.repo_tags)
        with self._lock:
            for other in self._images.list(lambda other: other.id != record.id):
                if taken & set(other.status.repo_tags):
                    kept = tuple(tag for tag in other.status.repo_tags if tag not in taken)
                    self._images.set(other.id, repo_tags=kept)
            if self._images.find(record.id) is None:
                return self._images.add(record)

            def merged(status: ImageStatus) -> ImageStatus:
                return ImageStatus(
                    repo_tags=tuple(dict.fromkeys((*status.repo_tags, *record.status.repo_tags))),
                    repo_digests=tuple(dict.fromkeys((*status.repo_digests, *record.status.repo_digests))),
                )

            return self._images.update(record.id, merged)[1]

    def list(self) -> list[ImageRecord]:
        return self._images.list()

    def find(self, spec: str) -> ImageRecord | None:
        """By ID (full or a unique prefix of 12+ hex digits), by tag, or by repo digest."""
        candidates = self._images.list()
        for record in candidates:
            status = record.status
            if spec in (record.id, _short(record.id)) or spec in status.repo_tags or spec in status.repo_digests:
                return record
        if len(spec) >= 12 and all(c in "0123456789abcdef" for c in spec):
            prefixed = [record for record in candidates if _hex(record.id).startswith(spec)]
            if len(prefixed) == 1:
                return prefixed[0]
        return None

    def remove(self, record: ImageRecord) -> None:
        with self._lock:
            self._images.remove(record)
            self._collect()

    def _collect(self) -> None:
        """Delete layers and blobs no image refers to any more."""
        images = self._images.list()
        used_layers = {_hex(layer) for record in images for layer in record.layers}
        for layer in self.layers.iterdir():
            if layer.name not in used_layers:
                shutil.rmtree(layer, ignore_errors=True)
        used_blobs = {_hex(record.id) for record in images}
        used_blobs |= {_hex(record.manifest_digest) for record in images}
        used_blobs |= self._layer_blobs(images)
        for blob in self.blobs.iterdir():
            if blob.name not in used_blobs:
                blob.unlink(missing_ok=True)

    def _layer_blobs(self, images: Iterable[ImageRecord]) -> set[str]:
        names: set[str] = set()
        for record in images:
            manifest = self.blob_path(record.manifest_digest)
            if manifest.is_file():
                names |= {_hex(layer["digest"]) for layer in json.loads(manifest.read_bytes()).get("layers", [])}
        return names

    def usage(self) -> tuple[int, int]:
        """Bytes and inodes used by the image store."""
        size = inodes = 0
        for directory, subdirectories, files in os.walk(self.root):
            inodes += len(subdirectories) + len(files)
            for name in files:
                try:
                    size += os.lstat(os.path.join(directory, name)).st_blocks * 512
                except FileNotFoundError:
                    continue
        return size, inodes

    def __iter__(self) -> Iterator[ImageRecord]:
        return iter(self.list())


def _short(image_id: str) -> str:
    return _hex(image_id)[:12]
