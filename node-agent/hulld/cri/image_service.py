"""CRI ImageService: one thin method per RPC over ``hulld.images.service``."""

from __future__ import annotations

import json
import time
from typing import Any

from cri_api.v1 import api_pb2 as cri
from cri_api.v1 import api_pb2_grpc

from hulld.images.registry import Credentials
from hulld.images.service import ImageService
from hulld.store.records import ImageRecord


def image_message(record: ImageRecord) -> Any:
    user = str(record.config.get("User") or "").split(":")[0]
    message = cri.Image(
        id=record.id,
        repo_tags=list(record.status.repo_tags),
        repo_digests=list(record.status.repo_digests),
        size=record.size,
        spec=cri.ImageSpec(image=record.id),
        pinned=False,
    )
    if user.isdigit():
        message.uid.value = int(user)
    elif user:
        message.username = user
    elif not record.config.get("User"):
        message.uid.value = 0
    return message


class ImageServicer(api_pb2_grpc.ImageServiceServicer):
    def __init__(self, images: ImageService) -> None:
        self.images = images

    def ListImages(self, request: Any, context: Any) -> Any:  # noqa: N802 - the CRI's method names
        wanted = request.filter.image.image if request.HasField("filter") else ""
        records = self.images.store.list()
        if wanted:
            found = self.images.status(wanted)
            records = [found] if found else []
        return cri.ListImagesResponse(images=[image_message(record) for record in records])

    def ImageStatus(self, request: Any, context: Any) -> Any:  # noqa: N802
        record = self.images.status(request.image.image)
        if record is None:
            return cri.ImageStatusResponse()  # CRI: an unknown image is an empty answer, not an error
        info = {"info": json.dumps({"layers": list(record.layers), "config": record.config})} if request.verbose else {}
        return cri.ImageStatusResponse(image=image_message(record), info=info)

    def PullImage(self, request: Any, context: Any) -> Any:  # noqa: N802
        auth = request.auth
        credentials = Credentials.from_auth(
            auth.username, auth.password, auth.auth, auth.identity_token, auth.registry_token
        )
        record = self.images.pull(request.image.image, credentials)
        return cri.PullImageResponse(image_ref=record.id)

    def RemoveImage(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.images.remove(request.image.image)
        return cri.RemoveImageResponse()

    def ImageFsInfo(self, request: Any, context: Any) -> Any:  # noqa: N802
        used, inodes = self.images.store.usage()
        usage = cri.FilesystemUsage(
            timestamp=time.time_ns(),
            fs_id=cri.FilesystemIdentifier(mountpoint=str(self.images.store.root)),
            used_bytes=cri.UInt64Value(value=used),
            inodes_used=cri.UInt64Value(value=inodes),
        )
        return cri.ImageFsInfoResponse(image_filesystems=[usage], container_filesystems=[usage])
