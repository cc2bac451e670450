"""Building blocks shared by kubehull's kinds: the model base, Kubernetes value types, conditions, selectors.

Every model here maps 1:1 onto a piece of the CRD schema (see ``crd.py``): field docstrings become the
``description`` that ``kubectl explain`` shows, and ``cel()`` attaches the CEL rules that the API server itself
enforces, each with a message naming the field.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

GROUP = "kubehull.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# Kubernetes resource.Quantity as its own OpenAPI schema spells it, without the sign: kubehull's quantities
# (pod overhead) are never negative.
QUANTITY = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


def cel(*rules: dict[str, str]) -> dict[str, Any]:
    """``json_schema_extra`` carrying CEL validation rules (``rule``, ``message``, optional ``fieldPath``)."""
    return {"x-kubernetes-validations": list(rules)}


def atomic_list() -> dict[str, Any]:
    """``json_schema_extra`` of a list only ever written whole, by one writer. The API server then tracks it as
    one field in ``managedFields`` instead of every field of every entry, which it would re-encode on each write
    (NodeRuntimes: thousands of writes per profile change)."""
    return {"x-kubernetes-list-type": "atomic"}


def list_map(*keys: str) -> dict[str, Any]:
    """``json_schema_extra`` of a list merged by key (server-side apply and strategic merge)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


class KubeModel(BaseModel):
    """Base of every API model: camelCase on the wire, snake_case in Python, docstrings as descriptions."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
        extra="ignore",
        frozen=True,
    )


IntOrString = Annotated[
    int | str,
    WithJsonSchema({"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}),
]
Quantity = Annotated[
    int | str,
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY,
            "minimum": 0,
        }
    ),
]
ObjectMeta = Annotated[dict[str, Any], WithJsonSchema({"type": "object"})]


class ConditionStatus(enum.StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(KubeModel):
    """A Kubernetes-style condition (type, status, reason, message)."""

    type: str = Field(max_length=316)
    """Condition type, e.g. Ready."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: str = Field(max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    """A CamelCase word saying why the condition is in this state."""
    message: str = Field(default="", max_length=32768)
    """Human-readable details."""
    last_transition_time: datetime.datetime
    """When the status last changed."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The .metadata.generation the condition was computed from."""


class LabelSelectorOperator(enum.StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class LabelSelectorRequirement(KubeModel):
    model_config = ConfigDict(
        json_schema_extra=cel(
            {
                "rule": "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0)"
                " : (!has(self.values) || size(self.values) == 0)",
                "message": "values must be non-empty for operators In and NotIn, and empty for Exists and DoesNotExist",
                "fieldPath": ".values",
            }
        )
    )

    key: str = Field(min_length=1, max_length=317)
    """The label key the requirement applies to."""
    operator: LabelSelectorOperator
    """In, NotIn, Exists or DoesNotExist."""
    values: list[Annotated[str, Field(max_length=63)]] = Field(default_factory=list, max_length=64)
    """Label values for In and NotIn."""


class LabelSelector(KubeModel):
    """A Kubernetes label selector; an empty selector selects everything."""

    match_labels: dict[str, Annotated[str, Field(max_length=63)]] = Field(default_factory=dict, max_length=64)
    """Labels that must all be present with these values."""
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list, max_length=32)
    """Requirements that must all hold."""

    def matches(self, labels: Mapping[str, str]) -> bool:
        if any(labels.get(key) != value for key, value in self.match_labels.items()):
            return False
        for requirement in self.match_expressions:
            present = requirement.key in labels
            value = labels.get(requirement.key)
            match requirement.operator:
                case LabelSelectorOperator.IN:
                    ok = present and value in requirement.values
                case LabelSelectorOperator.NOT_IN:
                    ok = not present or value not in requirement.values
                case LabelSelectorOperator.EXISTS:
                    ok = present
                case LabelSelectorOperator.DOES_NOT_EXIST:
                    ok = not present
            if not ok:
                return False
        return True


class TolerationOperator(enum.StrEnum):
    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(enum.StrEnum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Toleration(KubeModel):
    """A pod toleration, copied into the RuntimeClass's scheduling."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            {
                "rule": "!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
                "message": "value must be empty when operator is Exists",
                "fieldPath": ".value",
            },
            {
                "rule": "has(self.key) && self.key != '' || has(self.operator) && self.operator == 'Exists'",
                "message": "an empty key needs operator Exists (it then tolerates every taint)",
                "fieldPath": ".operator",
            },
            {
                "rule": "!has(self.tolerationSeconds) || has(self.effect) && self.effect == 'NoExecute'",
                "message": "tolerationSeconds applies only to effect NoExecute",
                "fieldPath": ".tolerationSeconds",
            },
        )
    )

    key: str | None = Field(default=None, max_length=317)
    """The taint key; empty with operator Exists tolerates everything."""
    operator: TolerationOperator | None = None
    """Exists or Equal (the default)."""
    value: str | None = Field(default=None, max_length=63)
    """The taint value for operator Equal."""
    effect: TaintEffect | None = None
    """The taint effect to tolerate; empty tolerates all effects."""
    toleration_seconds: int | None = None
    """For NoExecute: how long the pod stays bound after the taint appears."""
