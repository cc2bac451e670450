"""`python -m kubehull_api write|check DIR`: generate the CRD manifests, or check the committed ones."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kubehull_api import crd


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m kubehull_api", description=__doc__)
    parser.add_argument("command", choices=["write", "check"])
    parser.add_argument("directory", type=Path, nargs="?", default=Path("crds"))
    args = parser.parse_args()
    if args.command == "write":
        crd.write(args.directory)
        return 0
    stale = crd.drift(args.directory)
    if stale:
        print(
            f"out of date with operator/kubehull_api: {', '.join(stale)}; run: python -m kubehull_api write",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
