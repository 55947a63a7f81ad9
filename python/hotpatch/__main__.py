"""``python3 -m hotpatch ...``: runs the command-line client (see hotpatch.cli)."""

import sys

from .cli import _as_a_program, main

if __name__ == "__main__":
    _as_a_program()
    sys.exit(main())
