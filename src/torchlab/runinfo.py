"""What a run directory says about itself: written by training, read by `torchlab runs` and `torchlab report`.

Training writes `summary.json` when it starts (status "running"), after every
epoch, and when it ends (finished, early-stopped, max-steps, interrupted or
failed). A process killed outright leaves "running" behind; its pid and host
tell a live run from a dead one.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from torchlab.errors import UserError

COMMAND = ""  # the command line of this process, set by the CLI
STATUSES = ("finished", "interrupted", "failed", "running")
# How each ending of a training run is listed; the last two can be resumed.
SHOWN = {"finished": "finished", "early-stopped": "finished", "failed": "failed", "running": "running",
         "max-steps": "interrupted", "interrupted": "interrupted"}


def write(run_dir: Path, summary: dict) -> dict:
    """Write summary.json with when, where and how the run was started (kept from the first write); returns
    what was written."""
    path = Path(run_dir) / "summary.json"
    first = {}
    if path.exists():
        try:
            first = {k: v for k, v in json.loads(path.read_text()).items() if k in ("started", "command")}
        except (OSError, ValueError):
            pass
    record = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": COMMAND, **first, **summary,
              "updated": time.strftime("%Y-%m-%d %H:%M:%S"), "host": socket.gethostname(), "pid": os.getpid()}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)  # a reader never sees half a file
    return record


def alive(summary: dict) -> bool:
    """Whether the process that wrote a "running" summary still runs (known only on the same host)."""
    if summary.get("host") != socket.gethostname():
        return True  # another machine's run: trust what it says
    try:
        os.kill(int(summary.get("pid", -1)), 0)
    except (ProcessLookupError, ValueError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


def is_run(path: Path) -> bool:
    return (path / "config.toml").is_file() and ((path / "summary.json").is_file() or (path / "last.pt").is_file())


def read(run_dir: Path) -> dict:
    """The summary of one run, with `shown` (finished/interrupted/failed/running) and `resume` (a command or None)."""
    run_dir = Path(run_dir)
    path = run_dir / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        summary = {"status": "running"}  # a run from before summaries were written at the start
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable summary ({e})", "the run directory is damaged") from None
    status = summary.get("status", "running")
    if status == "running" and not alive(summary):
        status = "interrupted"  # killed without a chance to say so
        summary["killed"] = True
    summary["shown"] = SHOWN.get(status, status)
    summary["run_dir"] = str(run_dir)
    resumable = summary["shown"] == "interrupted" and (run_dir / "last.pt").is_file()
    summary["resume"] = f"torchlab train --resume {run_dir}" if resumable else None
    return summary


def find(root: Path) -> tuple[list[Path], list[Path]]:
    """Run directories under `root` (itself included), and the other folders met on the way (foreign)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such directory", "give the folder that holds your runs, e.g. runs")
    if is_run(root):
        return [root], []
    runs, foreign = [], []
    for path in sorted(p for p in root.iterdir() if p.is_dir()):
        if is_run(path):
            runs.append(path)
            continue
        inner, _ = find(path) if not path.is_symlink() else ([], [])
        runs += inner
        if not inner:
            foreign.append(path)
    return runs, foreign
