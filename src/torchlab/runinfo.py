"""What a run directory says about itself: written by training, read by `torchlab runs` and `torchlab report`.

Training writes `summary.json` when it starts (status "running"), after every
epoch, and when it ends (finished, early-stopped, max-steps, interrupted,
failed, or pruned: stopped after an epoch by `torchlab tune`'s pruner). A
process killed outright leaves "running" behind; its pid and host tell a live
run from a dead one.

The teaching demos (linreg, conv-viz, image --logdir) write TensorBoard logs
under runs/ too, but no run: each leaves a `demo.json` marker so that `torchlab
runs` can tell them from folders it knows nothing about.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from pathlib import Path

from torchlab.errors import UserError
from torchlab.i18n import N_, _

COMMAND = ""  # the command line of this process, set by the CLI
STATUSES = (N_("finished"), N_("max-steps"), N_("interrupted"), N_("failed"), N_("running"),  # shown translated
            N_("pruned"))
# How each ending of a training run is listed; max-steps and interrupted runs can be resumed.
SHOWN = {"finished": "finished", "early-stopped": "finished", "failed": "failed", "running": "running",
         "max-steps": "max-steps", "interrupted": "interrupted", "pruned": "pruned"}
DEMO_FILE = "demo.json"


UNITS = (N_("images"), N_("tokens"))  # what a task's evaluation counts


def sample_note(scored: dict, counts: dict, unit: str, splits) -> str:
    """"a sample of 1,000 of 10,000 test images": what a --max-steps run scored of each of `splits`."""
    each = [_("{scored} of {total} {split}").format(scored=f"{scored[k]:,}", total=f"{counts[k]:,}", split=k)
            for k in splits]
    return _("a sample of {parts} {unit}").format(parts=_(" and ").join(each), unit=_(unit))


def scored_text(summary: dict, split: str) -> str:
    """Which weights scored `split` ("best epoch 3"), and on what sample, in the user's language:
    summary.json keeps the English words, from which the sample's size is read back."""
    stored = summary.get(f"{split}_scored", "")
    words = stored.split(";")[0]
    text = _("best epoch {epoch}").format(epoch=words.split()[-1]) if words.startswith("best epoch") else _(words)
    sample = summary.get("eval_sample") or {}
    if split not in sample:
        return text
    total = re.search(r"a sample of [\d,]+ of ([\d,]+) ", stored)
    if total is None:  # not said the way this version says it: show it as written
        return stored
    note = sample_note(sample, {split: int(total[1].replace(",", ""))}, sample["unit"], (split,))
    return _("{weights}; {sample}, --max-steps run").format(weights=text, sample=note)


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
        raise UserError(_("{path}: not a readable summary ({error})").format(path=path, error=e), _("the run directory is damaged")) from None
    status = summary.get("status", "running")
    if status == "running" and not alive(summary):
        status = "interrupted"  # killed without a chance to say so
        summary["killed"] = True
    summary["shown"] = SHOWN.get(status, status)
    summary["run_dir"] = str(run_dir)
    summary["resume"] = resume_command(run_dir, summary["shown"])
    return summary


def resume_command(run_dir: Path, shown: str) -> str | None:
    """How to continue a run: an interrupted one as it was set up; one stopped by --max-steps with
    `--max-steps 0`, which lifts the limit and finishes its epochs (the same limit would stop it at once)."""
    if shown not in ("interrupted", "max-steps") or not (run_dir / "last.pt").is_file():
        return None
    return f"torchlab train --resume {run_dir}" + (" --max-steps 0" if shown == "max-steps" else "")


def epochs_text(summary: dict) -> str:
    """Epochs trained, a partial one included: "2", "1.35" or "0.0031" (a few --max-steps); "-" when unknown."""
    done = summary.get("epochs_done", summary.get("epochs"))
    if done is None or float(done).is_integer():
        return "-" if done is None else str(int(done))
    return f"{done:.3g}" if done >= 1 else f"{done:.2g}"


def write_demo(folder: Path, demo: str, **extra) -> None:
    """Mark a folder of a demo's logs (linreg, conv-viz, image) as such: not a run, nothing to resume."""
    record = {"demo": demo, "command": COMMAND, "written": time.strftime("%Y-%m-%d %H:%M:%S"), **extra}
    (Path(folder) / DEMO_FILE).write_text(json.dumps(record, indent=2) + "\n")


def demo_of(path: Path) -> str | None:
    """The demo that wrote a folder (its marker), or None."""
    try:
        return str(json.loads((Path(path) / DEMO_FILE).read_text()).get("demo", "demo"))
    except (OSError, ValueError, AttributeError):
        return None


def find(root: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """Run directories under `root` (itself included), the demos' log folders, and the other folders met on
    the way (foreign)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(_("{root}: no such directory").format(root=root), _("give the folder that holds your runs, e.g. runs"))
    if is_run(root):
        return [root], [], []
    runs, demos, foreign = [], [], []
    for path in sorted(p for p in root.iterdir() if p.is_dir()):
        if is_run(path):
            runs.append(path)
            continue
        inner, inner_demos, _foreign = find(path) if not path.is_symlink() else ([], [], [])
        runs += inner
        demos += inner_demos
        if not inner and not inner_demos:  # a demo may log into a folder of runs (image --logdir runs)
            (demos if demo_of(path) is not None else foreign).append(path)
    return runs, demos, foreign
