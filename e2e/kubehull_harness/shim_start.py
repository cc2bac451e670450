"""``start`` for gVisor's containerd-shim-runsc-v1 on machines without CAP_SYS_RESOURCE (this test machine).

The runsc shim's ``start`` sets its new process's oom_score_adj to -999 (pkg/shim/v1/manager.go,
``sys.SetOOMScore(pid, oomScoreMax)``); lowering a score needs CAP_SYS_RESOURCE, which this machine's root
lacks, and the shim forgives the refusal only inside a user namespace: ``start`` fails with "failed to set OOM
Score on shim: permission denied" (containerd 1.6 here fails the same way). On a node, hulld runs with the
capability and calls the shim's own ``start``.

This does what that ``start`` does, minus the OOM score: listen on the shim's socket, run the shim's serving
process (``<shim> -namespace -address -id``, the socket as descriptor 3, its own process group), write
``address`` and ``shim.pid`` into the bundle, and print the bootstrap JSON. Everything after (the task API,
events, ``delete``) is the real shim's.

    shim_start.py <shim binary> -namespace NS -address ADDRESS -id ID start
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

SOCKETS = Path("/run/hulld-test-shims")


def main(argv: list[str]) -> int:
    binary, arguments = argv[0], argv[1:]
    flags = dict(zip(arguments[:-1:2], arguments[1::2], strict=False))
    namespace, address, shim_id = flags["-namespace"], flags["-address"], flags["-id"]
    SOCKETS.mkdir(mode=0o700, exist_ok=True)
    path = SOCKETS / hashlib.sha256(f"{address}/{namespace}/{shim_id}".encode()).hexdigest()[:32]
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(128)
    os.dup2(listener.fileno(), 3, inheritable=True)
    process = subprocess.Popen(
        [binary, "-namespace", namespace, "-address", address, "-id", shim_id],
        pass_fds=(3,),
        process_group=0,
        env={**os.environ, "GOMAXPROCS": "2"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    Path("address").write_text(f"unix://{path}")
    Path("shim.pid").write_text(str(process.pid))
    print(json.dumps({"version": 2, "address": f"unix://{path}", "protocol": "ttrpc"}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
