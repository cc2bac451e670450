"""Objects the end-to-end tests apply: a RuntimeProfile, a pod under a RuntimeClass."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def profile(name: str, engine: str, path: Path | str, options: dict[str, str] | None = None) -> dict[str, Any]:
    runtime: dict[str, Any] = {"engine": engine, "path": str(path)}
    if options:
        runtime["options"] = options
    return {
        "apiVersion": "kubehull.io/v1alpha1",
        "kind": "RuntimeProfile",
        "metadata": {"name": name},
        "spec": {"handler": name, "runtime": runtime},
    }


def pod(name: str, image: str, runtime_class: str, command: str, pull: str = "IfNotPresent") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "runtimeClassName": runtime_class,
            "terminationGracePeriodSeconds": 2,
            "containers": [{"name": "main", "image": image, "imagePullPolicy": pull, "command": ["sh", "-c", command]}],
        },
    }
