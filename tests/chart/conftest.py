"""Chart tests that need running components (the dashboards' check against live metrics) reuse the operator's
fixtures (the API server with the operator, and its ``Cluster``) and hulld's (hulld with pod networking); the
node agent runs as the agent's tests run it (``tests.agent.conftest.AgentProcess``)."""

from tests.hulld.conftest import hulld_with_network
from tests.operator.conftest import cluster, kubehull_crds, operator

__all__ = ["cluster", "hulld_with_network", "kubehull_crds", "operator"]
