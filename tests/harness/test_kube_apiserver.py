"""The kube_apiserver fixture is a real, secure, RBAC-enforcing API server of the pinned version."""

from __future__ import annotations

import json
import subprocess
import time
import tomllib
import uuid
from typing import Any, cast

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from kubehull_harness import toolchain
from kubehull_harness.apiserver import KubeAPIServer

pytestmark = pytest.mark.cluster

WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.smoke.kubehull.io
spec:
  group: smoke.kubehull.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1}
"""


def kubectl(server: KubeAPIServer, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(toolchain.binary("kubectl")), f"--kubeconfig={server.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_kubectl_reports_the_pinned_server_version(kube_apiserver: KubeAPIServer) -> None:
    pinned = tomllib.loads(toolchain.VERSIONS_FILE.read_text())["kubernetes"]["version"]
    result = kubectl(kube_apiserver, "version", "-o", "json")
    assert result.returncode == 0, result.stderr
    versions = json.loads(result.stdout)
    assert versions["serverVersion"]["gitVersion"] == pinned
    assert versions["clientVersion"]["gitVersion"] == pinned
    assert pinned.startswith("v1.36.")


def test_crd_apply_then_create_get_delete(kube_apiserver: KubeAPIServer) -> None:
    applied = kubectl(kube_apiserver, "apply", "-f", "-", stdin=WIDGET_CRD)
    assert applied.returncode == 0, applied.stderr
    waited = kubectl(
        kube_apiserver, "wait", "--for=condition=Established", "--timeout=30s", "crd/widgets.smoke.kubehull.io"
    )
    assert waited.returncode == 0, waited.stderr

    objects = k8s.CustomObjectsApi(kube_apiserver.api_client())
    body = {"apiVersion": "smoke.kubehull.io/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3}}
    objects.create_namespaced_custom_object("smoke.kubehull.io", "v1", "default", "widgets", body)
    fetched = cast(
        dict[str, Any], objects.get_namespaced_custom_object("smoke.kubehull.io", "v1", "default", "widgets", "w1")
    )
    assert fetched["spec"] == {"size": 3}
    assert fetched["metadata"]["uid"]

    # The schema is enforced by the server, with the field named in the message.
    with pytest.raises(ApiException) as rejected:
        objects.create_namespaced_custom_object(
            "smoke.kubehull.io",
            "v1",
            "default",
            "widgets",
            {**body, "metadata": {"name": "w2"}, "spec": {"size": 0}},
        )
    assert rejected.value.status == 422
    assert "spec.size" in str(rejected.value.body)

    objects.delete_namespaced_custom_object("smoke.kubehull.io", "v1", "default", "widgets", "w1")
    with pytest.raises(ApiException) as gone:
        objects.get_namespaced_custom_object("smoke.kubehull.io", "v1", "default", "widgets", "w1")
    assert gone.value.status == 404


def _service_account_client(server: KubeAPIServer, name: str) -> k8s.ApiClient:
    """A client that authenticates with a real token the API server minted (TokenRequest) for ``name``."""
    core = k8s.CoreV1Api(server.api_client())
    core.create_namespaced_service_account("default", k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name=name)))
    return server.api_client(server.service_account_kubeconfig("default", name))


def test_rbac_denies_a_service_account_until_a_role_allows_it(kube_apiserver: KubeAPIServer) -> None:
    name = f"smoke-{uuid.uuid4().hex[:6]}"
    as_account = _service_account_client(kube_apiserver, name)

    review = k8s.AuthenticationV1Api(as_account).create_self_subject_review(k8s.V1SelfSubjectReview()).status
    assert review is not None
    assert review.user_info is not None
    assert review.user_info.username == f"system:serviceaccount:default:{name}"

    with pytest.raises(ApiException) as denied:
        k8s.CoreV1Api(as_account).list_namespaced_config_map("default")
    assert denied.value.status == 403
    assert f"system:serviceaccount:default:{name}" in str(denied.value.body)

    # Impersonation by the admin is checked by the same authorizer.
    can_i = kubectl(
        kube_apiserver,
        "auth",
        "can-i",
        "list",
        "configmaps",
        "-n",
        "default",
        f"--as=system:serviceaccount:default:{name}",
    )
    assert can_i.stdout.strip() == "no"

    rbac = k8s.RbacAuthorizationV1Api(kube_apiserver.api_client())
    rbac.create_namespaced_role(
        "default",
        k8s.V1Role(
            metadata=k8s.V1ObjectMeta(name=name),
            rules=[k8s.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["list"])],
        ),
    )
    rbac.create_namespaced_role_binding(
        "default",
        k8s.V1RoleBinding(
            metadata=k8s.V1ObjectMeta(name=name),
            role_ref=k8s.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name=name),
            subjects=[k8s.RbacV1Subject(kind="ServiceAccount", name=name, namespace="default")],
        ),
    )
    deadline = time.monotonic() + 10
    while True:  # the RBAC authorizer's informer catches up within moments
        try:
            k8s.CoreV1Api(as_account).list_namespaced_config_map("default")
            break
        except ApiException as error:
            if error.status != 403 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    with pytest.raises(ApiException) as still_denied:
        k8s.CoreV1Api(as_account).list_namespaced_secret("default")
    assert still_denied.value.status == 403
