"""Run a `torchlab` command inside this process and return what it prints with --json, or run a
`torchlab train` as the console script in a process of its own and return its summary.json.

Shared by the benchmark scripts, which drive torchlab exactly as a user would.
A failed command ends the benchmark with its exit code or its error.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from torchlab.cli import main


def torchlab_json(argv: list[str]) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([*argv, "--json", "--quiet"])
    if code != 0:
        sys.exit(f"torchlab {' '.join(argv)} failed with exit code {code}")
    return json.loads(out.getvalue())


def torchlab_train_process(argv: list[str], env: dict | None = None) -> tuple[dict, Path]:
    """(summary.json, run folder) of `torchlab train ARGV` run as the `torchlab` command beside this Python,
    in its own process: so with the memory allocator the command picks, as a user starts it."""
    run_dir = Path(tempfile.mkdtemp()) / "run"
    command = [str(Path(sys.executable).parent / "torchlab"), "train", *argv, "--run-dir", str(run_dir), "--quiet"]
    done = subprocess.run(command, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed: {done.stderr[-1000:]}")
    return json.loads((run_dir / "summary.json").read_text()), run_dir
