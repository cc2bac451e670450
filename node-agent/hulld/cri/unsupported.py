"""RuntimeService methods hulld does not serve (yet): each answers UNIMPLEMENTED saying so and why
(docs/hulld.md lists them)."""

from __future__ import annotations

from typing import Any

from hulld import errors

NO_CRI_METRICS = "not supported yet: hulld does not serve cAdvisor's metric set; the kubelet's own cAdvisor does"


class UnsupportedMethods:
    def CheckpointContainer(self, request: Any, context: Any) -> Any:  # noqa: N802 - the CRI's method names
        raise errors.Unimplemented("CheckpointContainer: hulld does not support container checkpoints")

    def ListMetricDescriptors(self, request: Any, context: Any) -> Any:  # noqa: N802
        raise errors.Unimplemented(f"ListMetricDescriptors: {NO_CRI_METRICS}")

    def ListPodSandboxMetrics(self, request: Any, context: Any) -> Any:  # noqa: N802
        raise errors.Unimplemented(f"ListPodSandboxMetrics: {NO_CRI_METRICS}")
