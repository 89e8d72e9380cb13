"""`python -m torchlab` and the `torchlab` command: the memory allocator first (malloc.py), then the CLI."""

import os
import sys

from torchlab import malloc


def entry() -> None:
    malloc.restart_with_tcmalloc()  # returns only where tcmalloc is absent or already chosen
    malloc.keep_freed_memory()
    from torchlab.cli import main

    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # `torchlab models | head`: the reader left, which is not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush stays quiet
        code = 0
    sys.exit(code)


if __name__ == "__main__":
    entry()
