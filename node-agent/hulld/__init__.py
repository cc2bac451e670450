"""hulld: kubehull's CRI runtime (CRI v1 RuntimeService + ImageService over a unix socket)."""
