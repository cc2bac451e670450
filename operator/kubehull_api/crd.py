"""The CRD manifests in ``crds/``, generated from the pydantic models.

``python -m kubehull_api write DIR`` writes them; ``python -m kubehull_api check DIR`` fails if the committed
files differ from what the models generate (a test runs it too).

Pydantic's JSON Schema is close to a Kubernetes structural schema; ``structural()`` closes the gap: it inlines
``$ref``s, turns ``Optional[X]`` (anyOf with null) into X, drops titles, keeps only scalar defaults (which the
API server then applies), says ``propertyNames`` limits in CEL, and leaves the models' ``x-kubernetes-*``
extensions untouched. A kind only kubehull's own components write (NodeRuntime) has no defaults in its schema:
its writers leave out what equals the model's default, and readers apply the models' defaults, so a default
is not stored and sent in every write and watch event of every node.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from kubehull_api import noderuntime, runtimeprofile
from kubehull_api.common import GROUP, VERSION

Schema = dict[str, Any]


def structural(schema: Schema, definitions: dict[str, Schema], defaults: bool = True) -> Schema:
    """``defaults``: keep the scalar defaults (False: none)."""
    if "$ref" in schema:
        target = definitions[schema["$ref"].rsplit("/", 1)[-1]]
        extra = {key: value for key, value in schema.items() if key != "$ref"}
        return structural({**target, **extra}, definitions, defaults)
    if "anyOf" in schema and not schema.get("x-kubernetes-int-or-string"):
        options = [option for option in schema["anyOf"] if option != {"type": "null"}]
        if len(options) != 1:
            raise ValueError(f"cannot express anyOf {schema['anyOf']} in a structural schema")
        rest = {key: value for key, value in schema.items() if key != "anyOf"}
        return structural({**options[0], **rest}, definitions, defaults)
    result: Schema = {}
    for key, value in schema.items():
        if key in ("title", "$defs"):
            continue
        if key == "default" and (not defaults or value is None or value == {} or value == []):
            continue
        if key == "propertyNames":  # not in the CRD dialect: say it in CEL
            rule = {
                "rule": f"self.all(k, size(k) <= {value['maxLength']})",
                "message": f"keys must be at most {value['maxLength']} characters",
            }
            result.setdefault("x-kubernetes-validations", []).append(rule)
        elif key == "properties":
            result[key] = {name: structural(sub, definitions, defaults) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            result[key] = structural(value, definitions, defaults)
        else:
            result[key] = value
    return result


def object_schema(model: type[BaseModel], defaults: bool = True) -> Schema:
    schema = model.model_json_schema(by_alias=True)
    return structural(schema, schema.get("$defs", {}), defaults)


@dataclasses.dataclass(frozen=True)
class Kind:
    model: type[BaseModel]
    kind: str
    plural: str
    short_names: tuple[str, ...]
    printer_columns: tuple[dict[str, Any], ...]
    server_defaults: bool = True
    """Whether the API server applies the models' defaults (False: only kubehull writes this kind, and leaves
    defaults out)."""

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


KINDS = (
    Kind(
        model=runtimeprofile.RuntimeProfile,
        kind=runtimeprofile.KIND,
        plural=runtimeprofile.PLURAL,
        short_names=("rp",),
        printer_columns=(
            {"name": "Handler", "type": "string", "jsonPath": ".spec.handler"},
            {"name": "Engine", "type": "string", "jsonPath": ".spec.runtime.engine"},
            {"name": "Ready", "type": "string", "jsonPath": ".status.ready"},
            {"name": "Namespaces", "type": "integer", "jsonPath": ".status.namespaces.count"},
            {
                "name": "Status",
                "type": "string",
                "jsonPath": ".status.conditions[?(@.type=='Ready')].reason",
                "priority": 1,
            },
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ),
    ),
    Kind(
        model=noderuntime.NodeRuntime,
        kind=noderuntime.KIND,
        plural=noderuntime.PLURAL,
        short_names=("nr",),
        printer_columns=(
            {"name": "Runtime", "type": "string", "jsonPath": ".status.runtime.version"},
            {"name": "Runtime-Ready", "type": "boolean", "jsonPath": ".status.runtime.ready"},
            {"name": "Handlers-Ready", "type": "string", "jsonPath": ".status.handlersReady"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ),
        server_defaults=False,
    ),
)


def manifest(kind: Kind) -> dict[str, Any]:
    schema = object_schema(kind.model, kind.server_defaults)
    schema["properties"]["apiVersion"].pop("default", None)
    schema["properties"]["kind"].pop("default", None)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.crd_name, "labels": {"app.kubernetes.io/part-of": "kubehull"}},
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.kind.lower(),
                "shortNames": list(kind.short_names),
                "categories": ["kubehull"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": list(kind.printer_columns),
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


HEADER = "# Generated from operator/kubehull_api by `python -m kubehull_api write crds`. Do not edit.\n"


def render(kind: Kind) -> str:
    return HEADER + yaml.safe_dump(manifest(kind), sort_keys=False, width=120)


def files() -> dict[str, str]:
    return {f"{kind.crd_name}.yaml": render(kind) for kind in KINDS}


def write(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files().items():
        (directory / name).write_text(text)


def drift(directory: Path) -> list[str]:
    """Names of the files in ``directory`` that differ from (or lack) what the models generate."""
    return [
        name
        for name, text in files().items()
        if not (directory / name).is_file() or (directory / name).read_text() != text
    ]
