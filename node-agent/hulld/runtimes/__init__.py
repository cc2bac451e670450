"""Runtime handlers: how a container is created, started, signalled, inspected and deleted.

``base.Handler`` is the interface; ``oci.OCIHandler`` runs OCI runtimes (runc, runsc, crun) under conmon;
``shim.handler.ShimHandler`` runs containerd shim v2 binaries (Kata's, gVisor's, runc's), one shim per pod.
``registry`` picks the implementation by ``runtime_type``; nothing else in hulld branches on a runtime's name.
"""
