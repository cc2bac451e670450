"""A real kube-apiserver on loopback: secure serving, RBAC, service-account tokens, client-certificate users.

The flag set follows controller-runtime's envtest (secure port, client CA, RBAC, service-account issuer and
signing keys) plus the Node authorizer, so the same control plane can later serve a real kubelet.
"""

from __future__ import annotations

import dataclasses
import ssl
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from kubehull_harness import pki, processes, toolchain
from kubehull_harness.waiting import wait_until

SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
SERVICE_NAMES = ("kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")


@dataclasses.dataclass
class KubeAPIServer:
    url: str
    ca: pki.CertificateAuthority
    kubeconfig: Path
    """An admin kubeconfig (client certificate in group system:masters)."""
    process: processes.ManagedProcess
    work_dir: Path
    etcd_url: str
    """The etcd it stores in (a second API server on it serves the same cluster)."""
    readiness: ssl.SSLContext
    """Admin credentials for its /readyz."""

    def api_client(self, kubeconfig: Path | None = None) -> k8s_client.ApiClient:
        api_client: k8s_client.ApiClient = k8s_config.new_client_from_config(
            config_file=str(kubeconfig or self.kubeconfig)
        )
        return api_client

    def wait_established(self, *crds: str, timeout: float = 30) -> None:
        """Wait until the CustomResourceDefinitions ``crds`` (names) are served. Polled here rather than by
        `kubectl wait`, which fails outright on a CRD created so recently that it has no conditions yet."""
        extensions: Any = k8s_client.ApiextensionsV1Api(self.api_client())

        def established(name: str) -> bool:
            conditions = extensions.read_custom_resource_definition(name).status.conditions or []
            return any(condition.type == "Established" and condition.status == "True" for condition in conditions)

        wait_until(lambda: all(established(name) for name in crds), timeout, f"CRDs {', '.join(crds)} established")

    def user_kubeconfig(self, user: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig that authenticates as ``user`` (and ``groups``) with a client certificate."""
        stem = "user-" + user.replace(":", "_")
        pair = self.ca.issue(stem, user, organizations=groups, client=True)
        path = self.work_dir / f"{stem}.kubeconfig"
        write_kubeconfig(path, self.url, self.ca.cert_path, pair, user)
        return path

    def service_account_kubeconfig(self, namespace: str, account: str) -> Path:
        """A kubeconfig that authenticates as a service account with a token the API server minted for it
        (TokenRequest, valid for an hour), as a pod's projected token does."""
        core: Any = k8s_client.CoreV1Api(self.api_client())
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"audiences": []}}
        token = core.create_namespaced_service_account_token(account, namespace, request).status.token
        path = self.work_dir / f"sa-{namespace}-{account}.kubeconfig"
        _write_config(path, self.url, self.ca.cert_path, f"{namespace}:{account}", {"token": token})
        return path

    def stop(self) -> None:
        self.process.stop()

    def restart(self, timeout: float = 90) -> None:
        """Stop it and start it again, same address and credentials: its clients' watches break, and a watch
        resumed from before the restart is answered 410 Gone (its watch cache starts anew)."""
        self.process.stop()
        self.process = processes.ManagedProcess(self.process.name, self.process.argv, self.process.log_path.parent)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        try:
            self.process.wait_ready(lambda: _ready(self.url, self.readiness), timeout, "ready (/readyz)")
        except Exception:
            self.process.stop()
            raise


def write_kubeconfig(path: Path, server: str, ca_cert: Path, credentials: pki.KeyPair, user: str) -> None:
    """A kubeconfig for ``user`` with a client certificate."""
    keys = {"client-certificate": str(credentials.cert), "client-key": str(credentials.key)}
    _write_config(path, server, ca_cert, user, keys)


def _write_config(path: Path, server: str, ca_cert: Path, user: str, credentials: dict[str, str]) -> None:
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kubehull", "cluster": {"server": server, "certificate-authority": str(ca_cert)}}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": "kubehull", "context": {"cluster": "kubehull", "user": user}}],
        "current-context": "kubehull",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


def _ready(url: str, context: ssl.SSLContext) -> bool:
    with urllib.request.urlopen(f"{url}/readyz", timeout=2, context=context) as response:  # noqa: S310 - https
        return bool(response.status == 200)


def start(
    work_dir: Path,
    log_dir: Path,
    etcd_url: str,
    timeout: float = 90,
    advertise_address: str = "127.0.0.1",
    name: str = "kube-apiserver",
) -> KubeAPIServer:
    """``advertise_address``: where pods reach it (the ``kubernetes`` Service's endpoint); loopback for tests
    without pods. Clients here always use 127.0.0.1. ``name``: of its log, in ``log_dir``."""
    pki_dir = work_dir / "pki"
    ca = pki.CertificateAuthority(pki_dir)
    serving = ca.issue(
        "apiserver",
        "kube-apiserver",
        hosts=list(dict.fromkeys([advertise_address, "127.0.0.1", "localhost", "10.96.0.1", *SERVICE_NAMES])),
        server=True,
    )
    admin = ca.issue("admin", "kubehull-admin", organizations=["system:masters"], client=True)
    kubelet_client = ca.issue(
        "apiserver-kubelet-client", "kube-apiserver-kubelet-client", organizations=["system:masters"], client=True
    )
    service_accounts = pki.service_account_keys(pki_dir)
    port = processes.free_port()
    url = f"https://127.0.0.1:{port}"
    argv: list[processes.Arg] = [
        toolchain.binary("kube-apiserver"),
        f"--etcd-servers={etcd_url}",
        "--bind-address=" + ("127.0.0.1" if advertise_address == "127.0.0.1" else "0.0.0.0"),  # noqa: S104
        f"--advertise-address={advertise_address}",
        f"--secure-port={port}",
        f"--cert-dir={pki_dir}",
        f"--tls-cert-file={serving.cert}",
        f"--tls-private-key-file={serving.key}",
        f"--client-ca-file={ca.cert_path}",
        "--authorization-mode=Node,RBAC",
        f"--service-account-key-file={service_accounts.cert}",
        f"--service-account-signing-key-file={service_accounts.key}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        f"--kubelet-client-certificate={kubelet_client.cert}",
        f"--kubelet-client-key={kubelet_client.key}",
        "--allow-privileged=true",
        "--kubelet-preferred-address-types=InternalIP,Hostname",
        "--v=1",
    ]
    process = processes.ManagedProcess(name, argv, log_dir)
    kubeconfig = work_dir / "admin.kubeconfig"
    write_kubeconfig(kubeconfig, url, ca.cert_path, admin, "kubehull-admin")
    context = ssl.create_default_context(cafile=str(ca.cert_path))
    context.load_cert_chain(str(admin.cert), str(admin.key))
    server = KubeAPIServer(
        url=url, ca=ca, kubeconfig=kubeconfig, process=process, work_dir=work_dir, etcd_url=etcd_url, readiness=context
    )
    server.wait_ready(timeout)
    return server
