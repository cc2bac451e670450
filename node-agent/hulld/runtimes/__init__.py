"""Runtime handlers: how a container is created, started, signalled, inspected and deleted.

``base.Handler`` is the interface; ``oci.OCIHandler`` runs OCI runtimes (runc, runsc, crun) under conmon.
The handler table in the configuration picks the implementation by ``runtime_type``; nothing else in hulld
branches on a runtime's name.
"""
