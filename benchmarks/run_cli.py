"""Run a `torchlab` command inside this process and return what it prints with --json.

Shared by the benchmark scripts, which drive torchlab exactly as a user would.
A failed command ends the benchmark with its exit code.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys

from torchlab.cli import main


def torchlab_json(argv: list[str]) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([*argv, "--json", "--quiet"])
    if code != 0:
        sys.exit(f"torchlab {' '.join(argv)} failed with exit code {code}")
    return json.loads(out.getvalue())
