"""What a run shows: console lines, progress bars, TensorBoard logs and figures."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from torchlab.errors import UserError
from torchlab.i18n import _

QUIET = False  # set by `--quiet`


def say(*parts) -> None:
    """Progress messages go to stderr, so stdout carries only results (and `--json`)."""
    if not QUIET:
        print(*parts, file=sys.stderr, flush=True)


class Nothing:
    """Stands in for a progress bar or a TensorBoard writer that cannot exist: every method does nothing."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def progress(total: int, desc: str, unit: str = "step", scale: int = 1, quiet: bool | None = None):
    """A progress bar that disappears when stderr is not a terminal (CI logs stay readable); `quiet`
    (default: the --quiet flag) switches it off."""
    try:
        from tqdm import tqdm
    except ImportError:  # a bare machine (benchmarks/gpu.sh): no bars
        return Nothing()
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=scale, leave=False,
                disable=True if (QUIET if quiet is None else quiet) else None, dynamic_ncols=True, file=sys.stderr)


def tracked(items, desc: str, unit: str = "batch", total: int | None = None):
    """Yield from `items` with a progress bar (evaluation, decoding, rendering); off when not a terminal."""
    bar = progress(total if total is not None else len(items) if hasattr(items, "__len__") else None, desc, unit)
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()


def new_run_dir(run_dir: str | None, default_name: str, flag: str = "--run-dir", resumable: bool = False) -> Path:
    """Create a run directory; refuse one that already holds files (nothing saved gets overwritten).

    Without `run_dir` the folder is runs/DEFAULT_NAME-TIME, with a -2, -3... suffix if taken.
    """
    path = Path(run_dir or f"runs/{default_name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if not run_dir:
        base, n = path, 1
        while path.exists():
            n += 1
            path = base.with_name(f"{base.name}-{n}")
    refuse_taken(path, flag, resumable)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(_("{flag} {path}: cannot create ({reason})").format(flag=flag, path=path, reason=e.strerror),
                        _("choose a writable folder")) from None
    return path


def refuse_taken(path: Path, flag: str = "--run-dir", resumable: bool = False) -> None:
    """A new run may not go into a file, or into a folder that already holds files."""
    if path.exists() and not path.is_dir():
        raise UserError(_("{flag} {path}: is a file, not a folder").format(flag=flag, path=path),
                        _("choose another {flag}").format(flag=flag))
    if path.exists() and any(path.iterdir()):
        hint = (_("resume it with `torchlab train --resume {path}` or choose another {flag}").format(path=path,
                                                                                                     flag=flag)
                if resumable else _("choose another {flag}").format(flag=flag))
        raise UserError(_("{flag} {path}: already holds files").format(flag=flag, path=path), hint)


def open_writer(run_dir):
    # Imported here: TensorBoard is slow to import and commands like `predict` never need it.
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # a bare machine (benchmarks/gpu.sh): train anyway, without the logs
        say(_("warning: the tensorboard package is not installed, so {run_dir} gets no TensorBoard logs "
              "(pip install tensorboard)").format(run_dir=run_dir))
        return Nothing()
    return SummaryWriter(log_dir=str(run_dir))


def confusion_figure(confusion: torch.Tensor, classes, title: str = "confusion matrix"):
    """A matplotlib figure of counts, rows = true class, columns = predicted class (None without matplotlib)."""
    try:
        import matplotlib
    except ImportError:  # a bare machine (benchmarks/gpu.sh)
        return None

    if "matplotlib.pyplot" not in sys.modules:  # a notebook keeps its inline backend
        matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * k, 0.8 + 0.6 * k), dpi=100)
    ax.imshow(confusion.numpy(), cmap="Blues")
    ax.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = confusion.max().item() / 2
    for i in range(k):
        for j in range(k):
            value = int(confusion[i, j])
            ax.text(j, i, str(value), ha="center", va="center", fontsize=7,
                    color="white" if value > threshold else "black")
    fig.tight_layout()
    return fig


def save_figure(fig, path) -> None:
    import matplotlib.pyplot as plt

    fig.savefig(path)
    plt.close(fig)


def format_confusion(confusion: torch.Tensor, classes) -> str:
    """The matrix as aligned text, rows = true class."""
    width = max(6, len(str(int(confusion.max()))) + 1)
    short = [c[:width - 1] for c in classes]
    name_w = max(len(c) for c in classes)
    lines = [" " * (name_w + 2) + "".join(s.rjust(width) for s in short)]
    for name, row in zip(classes, confusion.tolist()):
        lines.append(name.rjust(name_w) + "  " + "".join(str(v).rjust(width) for v in row))
    return "\n".join(lines)
