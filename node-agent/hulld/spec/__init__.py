"""Pure functions from the CRI's container configuration (plus the image's config) to an OCI runtime spec."""
