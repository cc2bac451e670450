"""Bad RuntimeProfiles are rejected by the API server itself, with a message naming the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from kubehull_harness.apiserver import KubeAPIServer

pytestmark = [pytest.mark.cluster, pytest.mark.beside]

VALID: dict[str, Any] = {"handler": "gvisor", "runtime": {"engine": "gvisor"}}


def merged(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(base)
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


# (case id, spec change, the field the message must name, words the message must contain)
BAD_SPECS = [
    ("handler-missing", {"handler": None}, "spec.handler", "Required value"),
    ("handler-not-dns-label", {"handler": "Run_C"}, "spec.handler", "should match"),
    ("engine-unknown", {"runtime": {"engine": "docker"}}, "spec.runtime.engine", "Unsupported value"),
    (
        "kata-as-oci",
        {"runtime": {"engine": "kata", "runtimeType": "oci"}},
        "spec.runtime.runtimeType",
        "runtimeType must be vm",
    ),
    (
        "options-on-a-shim",
        {"runtime": {"engine": "gvisor", "runtimeType": "vm", "options": {"platform": "systrap"}}},
        "spec.runtime.options",
        "a vm (containerd shim v2) handler reads its configPath instead",
    ),
    ("custom-without-path", {"runtime": {"engine": "custom"}}, "spec.runtime.path", "path is required"),
    ("path-relative", {"runtime": {"path": "bin/runsc"}}, "spec.runtime.path", "should match"),
    ("path-dotdot", {"runtime": {"path": "/usr/bin/../../tmp/runsc"}}, "spec.runtime.path", "'..'"),
    ("path-whitespace", {"runtime": {"path": "/usr/bin/run sc"}}, "spec.runtime.path", "should match"),
    ("config-path-relative", {"runtime": {"configPath": "kata.toml"}}, "spec.runtime.configPath", "should match"),
    (
        "config-path-on-oci-handler",
        {"runtime": {"configPath": "/etc/runsc.toml"}},
        "spec.runtime.configPath",
        "configPath is for vm",
    ),
    (
        "option-overriding-hulld-root",
        {"runtime": {"engine": "custom", "path": "/usr/bin/myrt", "options": {"root": "/"}}},
        "spec.runtime.options",
        "root is hulld's",
    ),
    (
        "option-name-smuggling-a-flag",
        {"runtime": {"engine": "custom", "path": "/usr/bin/myrt", "options": {"log=/etc/passwd --debug": "x"}}},
        "spec.runtime.options",
        "option names are camelCase words",
    ),
    (
        "annotation-pattern-with-inner-star",
        {"runtime": {"allowedAnnotations": ["io.example/*/x"]}},
        "spec.runtime.allowedAnnotations[0]",
        "should match",
    ),
    (
        "gvisor-unknown-option",
        {"runtime": {"options": {"turbo": "yes"}}},
        "spec.runtime.options",
        "engine gvisor accepts only these options",
    ),
    (
        "gvisor-bad-platform",
        {"runtime": {"options": {"platform": "hyperdrive"}}},
        "spec.runtime.options",
        "option platform of engine gvisor must be one of",
    ),
    (
        "selector-in-without-values",
        {"nodeSelector": {"matchExpressions": [{"key": "pool", "operator": "In"}]}},
        "spec.nodeSelector.matchExpressions[0].values",
        "must be non-empty",
    ),
    (
        "selector-bad-operator",
        {"nodeSelector": {"matchExpressions": [{"key": "pool", "operator": "Near"}]}},
        "spec.nodeSelector.matchExpressions[0].operator",
        "Unsupported value",
    ),
    (
        "toleration-exists-with-value",
        {"tolerations": [{"key": "pool", "operator": "Exists", "value": "x"}]},
        "spec.tolerations[0].value",
        "must be empty when operator is Exists",
    ),
    (
        "toleration-seconds-without-noexecute",
        {"tolerations": [{"key": "pool", "tolerationSeconds": 5}]},
        "spec.tolerations[0].tolerationSeconds",
        "only to effect NoExecute",
    ),
    (
        "overhead-not-a-quantity",
        {"overhead": {"podFixed": {"memory": "lots"}}},
        "spec.overhead.podFixed.memory",
        "should match",
    ),
    ("overhead-negative", {"overhead": {"podFixed": {"cpu": "-1"}}}, "spec.overhead.podFixed.cpu", "should match"),
    (
        "overhead-negative-integer",
        {"overhead": {"podFixed": {"cpu": -1}}},
        "spec.overhead.podFixed.cpu",
        "should be greater than or equal to 0",
    ),
    (
        "max-unavailable-zero",
        {"rollout": {"maxUnavailable": 0}},
        "spec.rollout.maxUnavailable",
        "positive integer or a percentage",
    ),
    (
        "max-unavailable-too-many-percent",
        {"rollout": {"maxUnavailable": "150%"}},
        "spec.rollout.maxUnavailable",
        "positive integer or a percentage",
    ),
    ("runtime-class-name-invalid", {"runtimeClassName": "Not_A_Name"}, "spec.runtimeClassName", "should match"),
    (
        "option-key-too-long",
        {"runtime": {"engine": "custom", "path": "/bin/x", "options": {"k" * 64: "v"}}},
        "spec.runtime.options",
        "at most 63 characters",
    ),
]


@pytest.fixture(scope="module")
def profiles(kubehull_crds: KubeAPIServer) -> Any:
    return k8s.CustomObjectsApi(kubehull_crds.api_client())


def create(profiles: Any, name: str, spec: dict[str, Any]) -> None:
    spec = {key: value for key, value in spec.items() if value is not None}
    profiles.create_cluster_custom_object(
        "kubehull.io",
        "v1alpha1",
        "runtimeprofiles",
        {"apiVersion": "kubehull.io/v1alpha1", "kind": "RuntimeProfile", "metadata": {"name": name}, "spec": spec},
    )


@pytest.mark.parametrize(("case", "change", "field", "words"), BAD_SPECS, ids=[case[0] for case in BAD_SPECS])
def test_bad_profile_is_rejected_naming_the_field(
    profiles: Any, case: str, change: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(ApiException) as rejected:
        create(profiles, f"bad-{case}", merged(VALID, change))
    assert rejected.value.status == 422
    message = str(rejected.value.body)
    assert field in message, message
    assert words in message, message


def test_handler_and_runtime_class_name_are_immutable(profiles: Any) -> None:
    create(profiles, "immutable", {**VALID, "runtimeClassName": "immutable-rc"})
    try:
        for patch, field, words in [
            ({"spec": {"handler": "other"}}, "spec.handler", "handler is immutable"),
            ({"spec": {"runtimeClassName": "other-rc"}}, "spec.runtimeClassName", "runtimeClassName is immutable"),
            ({"spec": {"runtimeClassName": None}}, "spec.runtimeClassName", "runtimeClassName is immutable"),
        ]:
            with pytest.raises(ApiException) as rejected:
                profiles.patch_cluster_custom_object(
                    "kubehull.io",
                    "v1alpha1",
                    "runtimeprofiles",
                    "immutable",
                    patch,
                    _content_type="application/merge-patch+json",
                )
            assert rejected.value.status == 422
            assert field in str(rejected.value.body)
            assert words in str(rejected.value.body)
        # Everything else may change.
        profiles.patch_cluster_custom_object(
            "kubehull.io",
            "v1alpha1",
            "runtimeprofiles",
            "immutable",
            {"spec": {"runtime": {"options": {"platform": "kvm"}}}},
            _content_type="application/merge-patch+json",
        )
    finally:
        profiles.delete_cluster_custom_object("kubehull.io", "v1alpha1", "runtimeprofiles", "immutable")


def test_valid_examples_are_accepted_and_defaulted(profiles: Any) -> None:
    create(profiles, "defaults", {"handler": "runc", "runtime": {"engine": "runc"}})
    try:
        stored = profiles.get_cluster_custom_object("kubehull.io", "v1alpha1", "runtimeprofiles", "defaults")
        assert stored["spec"]["runtime"]["privilegedWithoutHostDevices"] is False
    finally:
        profiles.delete_cluster_custom_object("kubehull.io", "v1alpha1", "runtimeprofiles", "defaults")
