"""Entry point of `kubehull-agent`."""

import sys


def main() -> int:
    print("kubehull-agent: not implemented yet (the node agent lands in a later release)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
