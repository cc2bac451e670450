"""The kubehull node agent: installs and runs hulld, applies the node's NodeRuntime, probes handlers."""
