"""``python3 -m hotpatch ...``: runs the command-line client (see hotpatch.cli)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
