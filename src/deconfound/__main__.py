"""``python -m deconfound``: the command line (what ``torchrun -m deconfound`` starts)."""

import sys

from deconfound.cli import main

if __name__ == "__main__":
    sys.exit(main())
