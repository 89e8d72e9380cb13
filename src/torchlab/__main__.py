"""`python -m torchlab` and the `torchlab` command: the memory allocator first (malloc.py), then the CLI."""

import sys

from torchlab import malloc


def entry() -> None:
    malloc.restart_with_tcmalloc()  # returns only where tcmalloc is absent or already chosen
    malloc.keep_freed_memory()
    from torchlab.cli import main

    sys.exit(main())


if __name__ == "__main__":
    entry()
