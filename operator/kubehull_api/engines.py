"""What kubehull knows about each runtime engine: defaults and the options it accepts.

One table serves both sides of the API: the CRD's CEL rules that reject unknown or invalid ``options`` are
generated from it (``option_rules``), and the operator resolves a profile's defaults from it (runtime type,
binary path, pod overhead) before handing the handler to the nodes.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping


class Engine(enum.StrEnum):
    RUNC = "runc"
    CRUN = "crun"
    GVISOR = "gvisor"
    KATA = "kata"
    CUSTOM = "custom"


class RuntimeType(enum.StrEnum):
    OCI = "oci"
    """An OCI runtime binary (runc's command line), run by hulld through a container monitor."""
    VM = "vm"
    """A containerd shim v2 binary (Kata Containers), spoken to over ttrpc."""


@dataclasses.dataclass(frozen=True)
class EngineDefaults:
    runtime_type: RuntimeType
    path: str | None
    """The binary's usual location; None means the profile must name it."""
    overhead: Mapping[str, str]
    """Pod overhead (RuntimeClass overhead.podFixed) unless the profile sets its own."""
    options: Mapping[str, tuple[str, ...]] | None
    """Accepted option names, each with its allowed values (empty tuple: any value); None: anything goes."""


BOOLEAN = ("true", "false")

ENGINES: Mapping[Engine, EngineDefaults] = {
    Engine.RUNC: EngineDefaults(RuntimeType.OCI, "/usr/bin/runc", {}, {"systemdCgroup": BOOLEAN}),
    Engine.CRUN: EngineDefaults(RuntimeType.OCI, "/usr/bin/crun", {}, {"systemdCgroup": BOOLEAN}),
    Engine.GVISOR: EngineDefaults(
        RuntimeType.OCI,
        "/usr/bin/runsc",
        {"cpu": "100m", "memory": "64Mi"},
        {
            "platform": ("systrap", "ptrace", "kvm"),
            "network": ("sandbox", "host", "none"),
            "debug": BOOLEAN,
            "debugLog": (),
        },
    ),
    Engine.KATA: EngineDefaults(
        RuntimeType.VM, "/usr/bin/containerd-shim-kata-v2", {"cpu": "250m", "memory": "160Mi"}, {}
    ),
    Engine.CUSTOM: EngineDefaults(RuntimeType.OCI, None, {}, None),
}


def option_rules() -> list[dict[str, str]]:
    """CEL rules for ``spec.runtime``: per engine, only known option names, and only allowed values."""
    rules = []
    for engine, defaults in ENGINES.items():
        if defaults.options is None:
            continue
        guard = f"self.engine != '{engine}' || !has(self.options)"
        names = sorted(defaults.options)
        allowed = ", ".join(f"'{name}'" for name in names)
        rules.append(
            {
                "rule": f"{guard} || self.options.all(k, k in [{allowed}])",
                "message": f"engine {engine} accepts only these options: {', '.join(names) or '(none)'}",
                "fieldPath": ".options",
            }
        )
        for name in names:
            values = defaults.options[name]
            if values:
                choices = ", ".join(f"'{value}'" for value in values)
                rules.append(
                    {
                        "rule": f"{guard} || !('{name}' in self.options) || self.options['{name}'] in [{choices}]",
                        "message": f"option {name} of engine {engine} must be one of: {', '.join(values)}",
                        "fieldPath": ".options",
                    }
                )
    return rules
