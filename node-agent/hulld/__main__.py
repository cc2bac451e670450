"""Entry point of `hulld`."""

import sys


def main() -> int:
    print("hulld: not implemented yet (the hulld CRI runtime lands in a later release)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
