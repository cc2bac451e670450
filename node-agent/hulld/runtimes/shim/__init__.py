"""containerd shim v2 handlers: ``handler`` (the Handler), ``launch`` (starting shims), ``stdio`` (their
containers' output into CRI logs), ``ttrpc`` (the protocol), ``protocol`` (the messages, generated at install)."""
