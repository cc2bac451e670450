"""The kubehull node agent: installs and runs hulld, applies the node's NodeHandlers, probes handlers."""
