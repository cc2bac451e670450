"""Entry point of `kubehull-operator`."""

import sys


def main() -> int:
    print("kubehull-operator: not implemented yet (the operator lands in a later release)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
