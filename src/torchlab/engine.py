"""The training and evaluation loops, shared by every classification task.

Each loop owns its mode: `train_one_epoch` puts the model in train() mode,
`evaluate` in eval() mode under `inference_mode`. Both take everything they
use as arguments and return a dict of metrics. Losses are summed over samples
and divided by the sample count, so a smaller last batch weighs what it should.
"""

from __future__ import annotations

import signal
import time
from contextlib import contextmanager
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from torchlab import distributed
from torchlab.logger import tracked
from torchlab.runtime import Runtime


def weight_average(model: torch.nn.Module, decay: float):
    """An exponential moving average of `model`'s weights (updated with `.update_parameters(model)`).

    The average of the last few hundred steps' weights usually scores better than the final weights:
    it smooths out the noise of the last updates (as Polyak averaging and SWA do)."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


class NonFiniteLoss(Exception):
    def __init__(self, step: int, value: float):
        super().__init__(f"loss became {value} at step {step}")
        self.step, self.value = step, value


class StopFlag:
    """Set by the first Ctrl-C; the loop finishes its current step and returns."""

    def __init__(self):
        self.requested = False


@contextmanager
def graceful_interrupt(flag: StopFlag):
    """First Ctrl-C asks the loop to stop at a step boundary; a second one stops at once."""

    def handler(signum, frame):
        # Under torchrun a Ctrl-C reaches each process twice (from the terminal and from torchrun, which
        # waits 30 s before killing): stopping at once would skip the checkpoint the processes agree on.
        if flag.requested and not distributed.WORLD.enabled:
            raise KeyboardInterrupt
        flag.requested = True

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler,
    rt: Runtime,
    *,
    label_smoothing: float = 0.0,
    global_step: int = 0,
    max_steps: int = 0,
    log_every: int = 50,
    stop: StopFlag | None = None,
    on_log: Callable[[int, float, float, int], None] | None = None,
    average: AveragedModel | None = None,
) -> dict:
    """One pass over `batches`; returns {"loss", "acc", "images", "steps", "seconds", "stopped"}.

    `on_log(global_step, loss, lr, images_so_far)` is called every `log_every`
    steps; `average` (a weight average) is updated after every step. Stops early
    (stopped=True) at `max_steps` or when `stop` is set.
    Raises NonFiniteLoss naming the first step whose loss was NaN or infinite.
    """
    model.train()
    start, tic = global_step, time.perf_counter()
    loss_sum = torch.zeros((), device=rt.device)  # summed over samples, read once at the end
    correct = torch.zeros((), dtype=torch.long, device=rt.device)
    images, pending, stopped = 0, [], False
    for x, y in batches:
        if distributed.should_stop(stop, global_step, rt.device) or (max_steps and global_step >= max_steps):
            stopped = True
            break
        loss, logits = train_step(model, x, y, optimizer, rt, label_smoothing)
        if scheduler is not None:
            scheduler.step()
        if average is not None:
            average.update_parameters(model)
        global_step += 1
        images += len(y)
        pending.append(loss.detach())
        loss_sum += loss.detach() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        if global_step % log_every == 0:
            latest = check_finite(pending, global_step - len(pending) + 1)
            if on_log is not None:
                on_log(global_step, latest, optimizer.param_groups[0]["lr"], images)
    if pending:
        check_finite(pending, global_step - len(pending) + 1)
    seen = torch.tensor(images, device=rt.device)
    distributed.all_sum(loss_sum, correct, seen)  # over all processes' slices of the batches
    images = int(seen)
    seconds = time.perf_counter() - tic
    return {
        "loss": loss_sum.item() / max(images, 1),
        "acc": correct.item() / max(images, 1),
        "images": images,
        "steps": global_step - start,
        "seconds": seconds,
        "stopped": stopped,
    }


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer, rt: Runtime,
               label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One update from a batch x [B, C, H, W], y [B]; returns (mean loss, logits [B, classes])."""
    with rt.autocast():
        logits = model(rt.prepare(x))  # [B, classes]
        loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, logits


def check_finite(pending: list, first_step: int) -> float:
    """Raise NonFiniteLoss for the first bad loss in `pending`; clear it; return the last loss."""
    losses = torch.stack(pending).float().cpu()  # one device sync for the whole window
    bad = (~torch.isfinite(losses)).nonzero()
    if len(bad):
        i = int(bad[0])
        raise NonFiniteLoss(first_step + i, float(losses[i]))
    pending.clear()
    return float(losses[-1])


def translate(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Images [B, C, H, W] moved down by dy and right by dx pixels (negative: up, left); edges repeat."""
    p = max(abs(dy), abs(dx))
    h, w = x.shape[-2:]
    padded = F.pad(x, (p, p, p, p), mode="replicate")  # [B, C, H + 2p, W + 2p]
    return padded[..., p - dy:p - dy + h, p - dx:p - dx + w]


def predict_logprobs(model: nn.Module, x: torch.Tensor, rt: Runtime, tta: bool = False, shift: int = 0) -> torch.Tensor:
    """Log-probabilities [B, classes].

    With `tta`, each prediction is averaged with that of the mirrored image. With
    `shift`, the image itself then counts for half, and its copies moved `shift`
    pixels down-right and up-left a quarter each (as airbench's test-time augmentation).
    """
    def probs(images):
        with rt.autocast():
            p = model(rt.prepare(images)).float().softmax(1)
            if tta:
                p = (p + model(rt.prepare(images.flip(3))).float().softmax(1)) / 2
        return p

    p = probs(x)
    if shift:
        p = p / 2 + (probs(translate(x, shift, shift)) + probs(translate(x, -shift, -shift))) / 4
    return p.clamp_min(1e-12).log()


def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    rt: Runtime,
    num_classes: int,
    tta: bool = False,
    shift: int = 0,
    keep: bool = False,
) -> dict:
    """Score every sample of `batches` once; returns {"loss", "acc", "count", "confusion"}.

    `confusion[i, j]` counts samples of true class i predicted as class j. With
    `keep`, "logprobs" [N, classes] (on the CPU, in batch order) holds every
    prediction this process made, for reports that look at single samples.
    """
    model.eval()
    distributed.sync_buffers(model)
    loss_sum = torch.zeros((), device=rt.device)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.long, device=rt.device)
    kept = []
    with torch.inference_mode():
        for x, y in tracked(batches, "evaluating"):
            logp = predict_logprobs(model, x, rt, tta, shift)
            loss_sum += F.nll_loss(logp, y, reduction="sum")
            confusion += torch.bincount(y * num_classes + logp.argmax(1), minlength=num_classes**2)
            if keep:
                kept.append(logp.cpu())
    distributed.all_sum(loss_sum, confusion)  # each process scored its own share of the split
    confusion = confusion.view(num_classes, num_classes).cpu()
    count = int(confusion.sum())
    result = {
        "loss": loss_sum.item() / max(count, 1),
        "acc": confusion.diag().sum().item() / max(count, 1),
        "count": count,
        "confusion": confusion,
    }
    if keep:
        result["logprobs"] = torch.cat(kept) if kept else torch.zeros(0, num_classes)
    return result


def per_class_accuracy(confusion: torch.Tensor) -> list[float]:
    totals = confusion.sum(1).clamp_min(1)
    return (confusion.diag() / totals).tolist()

