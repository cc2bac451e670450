"""Node agent tests reuse the operator's and hulld's fixtures: a real API server with the operator, a real
hulld with pod networking and the local registry."""

from tests.hulld.conftest import hulld_with_network
from tests.operator.conftest import cluster, kubehull_crds, operator

__all__ = ["cluster", "hulld_with_network", "kubehull_crds", "operator"]
