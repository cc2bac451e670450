"""The containerd shim v2 messages hulld speaks: ``ttrpc.proto`` (ttrpc's framing messages) and ``task.proto``
(the task service, the events a shim publishes, runtime options). Their ``*_pb2`` modules are generated at install
time (setup.py)."""
