"""kubehull's API: the RuntimeProfile and NodeRuntime models (group kubehull.io, version v1alpha1).

The pydantic models in this package are the single source of the API; the CRD manifests in crds/ are generated
from them. Shared by the operator and the node agent."""
