"""Images: references, the registry client, the content-addressed store, layer unpacking, pulls.

``service.ImageService`` is what the CRI layer calls; it owns the ``store`` (image records, blobs, unpacked
layers) and pulls through ``registry`` with ``unpack``. Nothing here knows about gRPC.
"""
