"""hulld: kubehull's CRI runtime (CRI v1 RuntimeService + ImageService over a unix socket).

Layout: ``cri/`` the gRPC surface (thin servicers, one edge); ``images/`` registry client, content store,
unpacking, pulls; ``node/`` host resources (CNI, namespaces, cgroups); ``config`` the typed TOML file;
``errors`` the domain errors; ``metrics``; ``__main__`` wiring only. See docs/hulld.md.
"""

__version__ = "0.1.0"
