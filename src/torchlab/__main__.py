"""`python -m torchlab ...` runs the same entry point as the `torchlab` script."""

import sys

from torchlab.cli import main

if __name__ == "__main__":
    sys.exit(main())
