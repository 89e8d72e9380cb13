"""The learning-rate range test (Smith 2015, "Cyclical learning rates"; fastai's lr_find).

One optimizer step per batch while the lr grows exponentially from `start` to `end` over `steps` steps,
on the model, optimizer and batches a run with the same settings trains (a language model: its bptt
windows, the hidden state carried from one to the next as in training). No schedule, no warm-up.

The loss is smoothed by an exponential moving average with bias correction (BETA); the sweep stops once
the smoothed loss exceeds DIVERGE x its minimum, or a loss is not finite. The suggestion is the lr of the
steepest descent of the smoothed loss against log10(lr), found before the minimum and after the first
few steps (the average is still settling there); the minimum's lr / 10 is given too, for reference.

Model weights, optimizer state and the random streams are as they were afterwards, so `train --lr find`
trains exactly as `train --lr <found>` would.
"""

from __future__ import annotations

import copy
import json
import math
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from torchlab import checkpoint, runinfo
from torchlab.engine import train_step
from torchlab.errors import UserError
from torchlab.i18n import N_, _
from torchlab.logger import Nothing, open_writer, progress

BETA = 0.98  # smoothing of the loss: about the last 50 steps count
DIVERGE = 4.0  # stop once the smoothed loss is this many times its minimum
SKIP = 10  # steps the slope ignores at the start (at most a tenth of the curve)
STEEPEST, MINIMUM = "steepest", "minimum"
RULES = {STEEPEST: N_("steepest descent of the smoothed loss, before its minimum"),
         MINIMUM: N_("the smoothed loss's minimum / 10 (too few steps before the minimum for a slope)")}


@dataclass(frozen=True)
class Range:
    """What the sweep covers: lrs from `start` to `end`, `steps` optimizer steps."""

    start: float = 1e-7
    end: float = 10.0
    steps: int = 200

    def check(self) -> None:
        """One-line errors for a range the sweep cannot make sense of."""
        hint = _("e.g. --start 1e-7 --end 10 --steps 200")
        for name, value in (("start", self.start), ("end", self.end)):
            if not (math.isfinite(value) and value > 0):
                raise UserError(_("--{name} {value}: must be a finite number above 0").format(name=name, value=value),
                                hint)
        if self.start >= self.end:
            raise UserError(_("--start {start} must be below --end {end}").format(start=self.start, end=self.end), hint)
        if self.steps < 10:
            raise UserError(_("--steps {steps}: must be at least 10").format(steps=self.steps), hint)

    def lr(self, i: int) -> float:
        """The lr of step i (0-based): start at 0, end at steps - 1, evenly spaced in log(lr)."""
        return self.start * (self.end / self.start) ** (i / (self.steps - 1))


@dataclass
class Sweep:
    """The curve (one entry per step taken) and what it suggests; `rule` is STEEPEST or MINIMUM."""

    lrs: list
    losses: list
    smoothed: list
    suggestion: float
    rule: str
    min_lr: float  # the lr at the smoothed loss's minimum
    planned: int  # --steps: more than len(lrs) when the loss diverged first
    diverged: bool

    def record(self) -> dict:
        return {**asdict(self), "rule_text": RULES[self.rule], "min_lr_div10": self.min_lr / 10}


def smooth(losses: list, beta: float = BETA) -> list:
    """Exponential moving average with bias correction: the first values are not pulled towards 0."""
    avg, out = 0.0, []
    for i, loss in enumerate(losses, 1):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta**i))
    return out


def suggest(lrs: list, smoothed: list) -> tuple[float, str]:
    """(lr, rule): the steepest slope of smoothed loss vs log10(lr) between the first steps and the minimum;
    the minimum's lr / 10 where fewer than 3 points lie there."""
    best = min(range(len(smoothed)), key=smoothed.__getitem__)
    first = min(SKIP, len(smoothed) // 10)
    if best - first < 2:
        return lrs[best] / 10, MINIMUM
    x = [math.log10(lr) for lr in lrs]
    slopes = [(smoothed[i + 1] - smoothed[i]) / (x[i + 1] - x[i]) for i in range(first, best)]
    i = first + min(range(len(slopes)), key=slopes.__getitem__)
    return lrs[i], STEEPEST


def make_sweep(span: Range, lrs: list, losses: list, diverged: bool) -> Sweep:
    if not losses:
        raise UserError(_("the loss was not finite from the first step on"), _("lower --start"))
    smoothed = smooth(losses)
    lr, rule = suggest(lrs, smoothed)
    best = min(range(len(smoothed)), key=smoothed.__getitem__)
    return Sweep(lrs, losses, smoothed, lr, rule, lrs[best], span.steps, diverged)


@contextmanager
def untouched(model: torch.nn.Module, optimizer: torch.optim.Optimizer):
    """Inside, the sweep may change anything; afterwards weights, optimizer state (lr included), train/eval
    mode and the random streams are as before."""
    weights = copy.deepcopy(model.state_dict())
    state = copy.deepcopy(optimizer.state_dict())
    rng, mode = checkpoint.rng_state(), model.training
    try:
        yield
    finally:
        model.load_state_dict(weights)
        optimizer.load_state_dict(state)
        optimizer.zero_grad(set_to_none=True)
        checkpoint.set_rng_state(rng)
        model.train(mode)


def sweep(model, optimizer, batches, loss_fn, rt, span: Range, clip: float = 0.0, quiet: bool = True) -> Sweep:
    """The range test over `batches` ((epoch, batch) pairs; the carry restarts with each epoch).
    `loss_fn` as engine.train_steps takes it. Model and optimizer are unchanged afterwards."""
    span.check()
    lrs, losses, diverged = [], [], False
    bar = Nothing() if quiet else progress(span.steps, "lr find", "step")
    with untouched(model, optimizer):
        model.train()
        for i, value in enumerate(step_losses(model, optimizer, batches, loss_fn, rt, span, clip)):
            bar.update(1)
            if not math.isfinite(value):
                diverged = True
                break
            lrs.append(span.lr(i))
            losses.append(value)
            curve = smooth(losses)  # recomputed: a few hundred points
            if curve[-1] > DIVERGE * min(curve):
                diverged = True
                break
    bar.close()
    return make_sweep(span, lrs, losses, diverged)


def step_losses(model, optimizer, batches, loss_fn, rt, span: Range, clip: float):
    """One step per batch at the sweep's lr; yields each step's loss (a float: the stop test reads it)."""
    carry, current = None, None
    for i, (epoch, batch) in zip(range(span.steps), batches):
        for group in optimizer.param_groups:
            group["lr"] = span.lr(i)
        carry = carry if epoch == current else None  # a new epoch starts from a zero state, as training does
        current = epoch
        loss, _n, _sums, carry = train_step(model, batch, loss_fn, carry, optimizer, rt, clip)
        yield float(loss.detach())


def stream(task, cfg, data):
    """(epoch, batch) for as many epochs as the sweep needs: the task's training batches in order."""
    epoch = 0
    while True:
        for batch in task.batches(cfg, data, epoch, 0):
            yield epoch, batch
        epoch += 1


def run_sweep(task, cfg, data, rt, model, optimizer, span: Range, quiet: bool = True) -> Sweep:
    """The sweep on a run's own pieces: its batches, its task's loss and gradient clipping."""
    with rt.threads_set():
        return sweep(model, optimizer, stream(task, cfg, data), task.loss_fn(cfg), rt, span,
                     clip=getattr(cfg, "clip", 0.0), quiet=quiet)


def before_training(task, cfg, data, rt, model, quiet: bool = True) -> Sweep:
    """`train --lr find`: the sweep with the default range on the run's freshly built model, before its
    optimizer exists (a throw-away one of the same kind sweeps)."""
    from torchlab.optim import build_optimizer

    optimizer, _schedule = build_optimizer(cfg, model, 1)  # the schedule plays no part in the sweep
    return run_sweep(task, cfg, data, rt, model, optimizer, Range(), quiet)


def suggestion_text(s: Sweep) -> str:
    return _("suggested lr {lr} ({rule}); the minimum's lr / 10: {reference}").format(
        lr=f"{s.suggestion:.3g}", rule=_(RULES[s.rule]), reference=f"{s.min_lr / 10:.3g}")


def save(s: Sweep, folder: Path, task: str) -> None:
    """lr_find.json, lr_find.png and TensorBoard scalars in `folder`, marked as no training run."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lr_find.json").write_text(json.dumps({"task": task, **s.record()}, indent=2) + "\n")
    figure(s, folder / "lr_find.png", task)
    writer = open_writer(folder)
    for i, (lr, loss, smoothed) in enumerate(zip(s.lrs, s.losses, s.smoothed)):
        writer.add_scalar("lr_find/loss", loss, i)
        writer.add_scalar("lr_find/smoothed", smoothed, i)
        writer.add_scalar("lr_find/lr", lr, i)
    writer.close()
    runinfo.write_demo(folder, "lr-find", suggestion=s.suggestion, rule=s.rule)  # `torchlab runs`: not a run


def figure(s: Sweep, path: Path, task: str) -> None:
    """Loss (faint) and smoothed loss against lr on a log axis; the suggestion and the minimum / 10 marked."""
    try:
        import matplotlib
    except ImportError:  # a bare machine: the JSON and TensorBoard still hold the curve
        return
    if "matplotlib.pyplot" not in sys.modules:  # a notebook keeps its inline backend
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    ax.plot(s.lrs, s.losses, color="0.75", linewidth=0.8, label="loss")
    ax.plot(s.lrs, s.smoothed, color="C0", label=f"smoothed (EMA {BETA})")
    ax.axvline(s.min_lr / 10, color="0.5", linestyle="--", linewidth=0.8, label=f"minimum / 10: {s.min_lr / 10:.3g}")
    at = s.smoothed[s.lrs.index(s.suggestion)] if s.suggestion in s.lrs else min(s.smoothed)
    ax.plot([s.suggestion], [at], "o", color="C3", label=f"suggested: {s.suggestion:.3g} ({s.rule})")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    top = max(s.smoothed[:max(len(s.smoothed) // 10, 1)] + [min(s.smoothed) * DIVERGE])
    ax.set_ylim(min(s.losses) * 0.9 if min(s.losses) > 0 else None, top * 1.1)  # the diverged tail off the top
    ax.set_title(f"lr find: {task}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def after_sweep(s: Sweep, lr: float, run_dir: Path, ctx) -> None:
    """`train --lr find` says in one line what it found and keeps the curve in RUN_DIR/lr_find."""
    if not ctx.world.main:
        return
    save(s, Path(run_dir) / "lr_find", "train")
    ctx.say(_("--lr find: training with lr {lr} ({rule}; the minimum's lr / 10 was {reference}); curve in {path}")
            .format(lr=f"{lr:.3g}", rule=_(RULES[s.rule]), reference=f"{s.min_lr / 10:.3g}",
                    path=Path(run_dir) / "lr_find" / "lr_find.png"))


def find(task_name: str, settings: dict, config: str | None, span: Range, quiet: bool = True) -> tuple[Sweep, Path]:
    """`torchlab lr-find TASK`: the sweep on what `torchlab train TASK` with the same settings would train;
    returns it and the folder (--run-dir, default runs/lr-find-TASK-TIME) holding its files."""
    from torchlab.api import TASKS
    from torchlab.config import resolve
    from torchlab.logger import new_run_dir, refuse_taken
    from torchlab.optim import build_optimizer
    from torchlab.runtime import pick_device
    from torchlab.trainer import setup

    span.check()  # before any data is read
    cfg = resolve({**settings, "task": task_name}, config)
    if cfg.run_dir:
        refuse_taken(Path(cfg.run_dir))  # before the data and the sweep, not after
    task = TASKS[cfg.task]
    cfg, data, rt, model, _steps, _notes = setup(task, cfg, pick_device(cfg.device))
    optimizer, _schedule = build_optimizer(cfg, model, 1)  # the sweep sets the lr of every step itself
    s = run_sweep(task, cfg, data, rt, model, optimizer, span, quiet)
    folder = new_run_dir(cfg.run_dir, f"lr-find-{cfg.task}")
    save(s, folder, cfg.task)
    return s, folder
