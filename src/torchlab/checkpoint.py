"""Checkpoints: plain dicts of tensors and built-in types, written atomically.

A checkpoint holds everything needed to rebuild the model on its own (model
name and config) and to resume training exactly (optimizer, scheduler,
progress counters, random-number states). Because it contains no pickled
classes, it loads with `torch.load(weights_only=True)`, which never runs
code from the file.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from torchlab import distributed
from torchlab.errors import UserError
from torchlab.i18n import _

FORMAT = "torchlab-checkpoint"
VERSION = 2  # 2: one training state for every task (best, seen); 1 is still read (trainer.State.restore)
REQUIRED = ("format", "version", "task", "model_name", "model_config", "model_state")


def atomic_save(obj: Any, path: Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`.

    A crash at any moment leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files private; give the usual permissions
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def load(path: str | Path, task: str | None = None) -> dict[str, Any]:
    """Read a checkpoint safely; `task` (e.g. "fashion-mnist") rejects checkpoints of other tasks."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt" if (path / "best.pt").exists() else path / "last.pt"
    if not path.is_file():
        raise UserError(_("{path}: no such checkpoint").format(path=path),
                        _("pass a .pt file written by `torchlab train`"))
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(_("{path}: not a readable torchlab checkpoint ({reason})").format(path=path,
                                                                                          reason=first[:160]),
                        _("it may be damaged or written by another program; use a checkpoint from `torchlab train`")
                        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or any(k not in ckpt for k in REQUIRED):
        raise UserError(_("{path}: not a torchlab checkpoint").format(path=path),
                        _("use a checkpoint written by `torchlab train`"))
    if ckpt["version"] > VERSION:
        raise UserError(_("{path}: checkpoint format {version} is newer than this torchlab").format(
            path=path, version=ckpt["version"]), _("upgrade torchlab"))
    if task is not None and ckpt["task"] != task:
        raise UserError(_("{path}: checkpoint is for task {found}, not {wanted}").format(
            path=path, found=repr(ckpt["task"]), wanted=repr(task)), _("use a checkpoint of the same task"))
    ckpt["path"] = str(path)
    return ckpt


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def rng_states() -> dict[str, Any]:
    """The random state to save: `rng` of this process and, with several processes, `rng_ranks`, every
    rank's (a collective: every rank must call it)."""
    out = {"rng": rng_state()}
    if distributed.WORLD.enabled:
        out["rng_ranks"] = distributed.gather_objects(rng_state())
    return out


def restore_rng(ckpt: dict[str, Any]) -> None:
    """Each rank continues its own saved stream; with a different number of processes than were saved,
    rank 0's stream is spread over the new ranks (resumed runs then differ from uninterrupted ones)."""
    world, ranks = distributed.WORLD, ckpt.get("rng_ranks")
    if world.enabled and ranks and len(ranks) == world.size:
        set_rng_state(ranks[world.rank])
        return
    set_rng_state(ckpt["rng"])
    distributed.spread_seeds()


def model_states(model: torch.nn.Module, average=None) -> dict[str, Any]:
    """The weights a checkpoint keeps. With a weight average (--ema), `model_state` is the average (what
    was validated, and what predict and generate load) and `train_model_state` the weights training
    continues from."""
    if average is None:
        return {"model_state": model.state_dict()}
    return {"model_state": average.module.state_dict(), "train_model_state": model.state_dict(),
            "ema_updates": int(average.n_averaged)}


def restore_models(ckpt: dict[str, Any], model: torch.nn.Module, average=None) -> None:
    """Load what `model_states` saved back into the training model and its average."""
    model.load_state_dict(ckpt.get("train_model_state", ckpt["model_state"]))
    if average is not None:
        average.module.load_state_dict(ckpt["model_state"])
        average.n_averaged.fill_(ckpt["ema_updates"])


def restore_training(ckpt: dict[str, Any], model: torch.nn.Module, average, optimizer, scheduler) -> None:
    """Everything a resumed run continues from: weights (and their average), optimizer, schedule, random state."""
    restore_models(ckpt, model, average)
    optimizer.load_state_dict(ckpt["optimizer_state"])
    if scheduler is not None:
        scheduler.load_state_dict(ckpt["scheduler_state"])
    restore_rng(ckpt)
