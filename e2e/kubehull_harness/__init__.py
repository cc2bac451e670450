"""The local-cluster harness: real Kubernetes components, a real OCI registry and their toolchain.

Used by the pytest fixtures (``pytest_plugin``), by ``python -m kubehull_harness up`` and by ``.ci/``:

- ``toolchain``: build and cache third-party binaries (kube-*, etcd, helm, crictl/critest, kind, CoreDNS, runsc,
  containerd) from Go modules;
- ``processes``: start, watch and stop long-running processes, with logs;
- ``pki``: a throw-away CA and certificates; ``etcd`` and ``apiserver``: the control plane;
- ``registry`` and ``images``: Debian's docker-registry and the busybox-based test images;
- ``cluster``: a one-node cluster on this machine whose kubelet runs on hulld; ``deploy``: kubehull's image
  and chart installed into it; ``prometheus``: Debian's Prometheus scraping fixed targets.
"""
