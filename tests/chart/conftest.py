"""Chart tests that need running components (the dashboards' check against live metrics) reuse the node agent's
fixtures: the API server with the operator, hulld with pod networking."""

from tests.agent.conftest import cluster, hulld_with_network, kubehull_crds, operator

__all__ = ["cluster", "hulld_with_network", "kubehull_crds", "operator"]
