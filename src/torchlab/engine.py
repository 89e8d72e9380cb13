"""The training and evaluation loops of every task.

`train_steps` is the one inner training loop: each task hands it its loss for
one batch (`classification_loss`, `language_model_loss`). `evaluate` scores a
classifier, `evaluate_lm` a language model. Each loop owns its mode: training
puts the model in train() mode, evaluation in eval() mode under
`inference_mode`. They take everything they use as arguments and return a dict
of metrics. Losses are summed over samples and divided by the sample count, so
a smaller last batch weighs what it should.
"""

from __future__ import annotations

import math
import signal
import time
from contextlib import contextmanager
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from torchlab import distributed, procs
from torchlab.data.text import window_starts, windows
from torchlab.logger import progress, tracked
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


class Terminated(Exception):
    """SIGTERM arrived (torchrun stopping its workers, a job scheduler, `kill`)."""


def sigterm_raises():
    """SIGTERM raises Terminated inside the block, so a run can say how it ended (procs.terminate_raises,
    which leaves signals alone outside the main thread and puts the old handler back)."""
    return procs.terminate_raises(lambda: Terminated("stopped by SIGTERM"))


def train_steps(model: nn.Module, batches: Iterable, loss_fn: Callable, optimizer: torch.optim.Optimizer, scheduler,
                rt: Runtime, *, carry=None, clip: float = 0.0, global_step: int = 0, max_steps: int = 0,
                log_every: int = 50, stop: StopFlag | None = None,
                on_log: Callable[[int, float, float, int], None] | None = None, average: AveragedModel | None = None) -> dict:
    """The one inner loop of every task: a step per batch; returns {"loss", "count", "sums", "steps",
    "seconds", "stopped", "carry"}.

    `loss_fn(model, batch, carry, rt)` gives (mean loss, samples, {name: tensor to sum}, carry): the task's
    loss for one batch and the state it hands to the next one (a language model's hidden state). Losses
    stay on the device and are checked for NaN every `log_every` steps, so no step waits for the device;
    `on_log(global_step, loss, lr, samples_so_far)` is called then. With several processes the sums cover
    all of them. Stops early (stopped=True) at `max_steps` or when `stop` is set.
    Raises NonFiniteLoss naming the first step whose loss was NaN or infinite.
    """
    model.train()
    start, tic = global_step, time.perf_counter()
    loss_sum = torch.zeros((), device=rt.device)  # summed over samples, read once at the end
    sums: dict[str, torch.Tensor] = {}
    count, pending, stopped = 0, [], False
    for batch in batches:
        if distributed.should_stop(stop, global_step, rt.device) or (max_steps and global_step >= max_steps):
            stopped = True
            break
        loss, n, extra, carry = train_step(model, batch, loss_fn, carry, optimizer, rt, clip)
        if scheduler is not None:
            scheduler.step()
        if average is not None:
            average.update_parameters(model)
        global_step += 1
        count += n
        pending.append(loss.detach())
        loss_sum += loss.detach() * n
        for name, value in extra.items():
            sums[name] = sums[name] + value if name in sums else value
        if global_step % log_every == 0:
            latest = check_finite(pending, global_step - len(pending) + 1)
            if on_log is not None:
                on_log(global_step, latest, optimizer.param_groups[0]["lr"], count)
    if pending:
        check_finite(pending, global_step - len(pending) + 1)
    seen = torch.tensor(count, device=rt.device)
    distributed.all_sum(loss_sum, seen, *sums.values())  # over all processes' slices of the batches
    count = int(seen)
    return {"loss": loss_sum.item() / max(count, 1), "count": count, "sums": {k: v.item() for k, v in sums.items()},
            "steps": global_step - start, "seconds": time.perf_counter() - tic, "stopped": stopped, "carry": carry}


def train_step(model: nn.Module, batch, loss_fn: Callable, carry, optimizer: torch.optim.Optimizer, rt: Runtime,
               clip: float = 0.0):
    """One update from one batch: the task's loss, backward, gradient clipping (clip > 0), optimizer step.
    Returns loss_fn's (loss, samples, sums, carry)."""
    loss, n, extra, carry = loss_fn(model, batch, carry, rt)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return loss, n, extra, carry


def classification_loss(label_smoothing: float = 0.0) -> Callable:
    """loss_fn for train_steps: cross-entropy of images x [B, C, H, W] against labels y [B]; counts the
    correct predictions."""
    def loss_fn(model, batch, carry, rt: Runtime):
        x, y = batch
        with rt.autocast():
            logits = model(rt.prepare(x))  # [B, classes]
            loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
        return loss, len(y), {"correct": (logits.detach().argmax(1) == y).sum()}, None

    return loss_fn


def next_token_loss(model, x: torch.Tensor, y: torch.Tensor, state, rt: Runtime, reduction: str = "mean"):
    """Cross-entropy of a language model's next-token logits: x, y [B, T] -> (loss, new state)."""
    with rt.autocast():
        logits, state = model(x, state)  # [B, T, V]
    return F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction=reduction), state


def language_model_loss(detach: Callable) -> Callable:
    """loss_fn for train_steps over windows x, y [B, T]: the hidden state flows from window to window, cut
    from the previous window's graph by `detach` (truncated back-propagation through time)."""
    def loss_fn(model, batch, state, rt: Runtime):
        x, y = batch
        loss, state = next_token_loss(model, x, y, detach(state) if state is not None else None, rt)
        return loss, y.numel(), {}, detach(state)

    return loss_fn


def train_one_epoch(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], optimizer, scheduler,
                    rt: Runtime, *, label_smoothing: float = 0.0, **options) -> dict:
    """train_steps for a classifier; returns {"loss", "acc", "images", "steps", "seconds", "stopped"}."""
    m = train_steps(model, batches, classification_loss(label_smoothing), optimizer, scheduler, rt, **options)
    return {"loss": m["loss"], "acc": m["sums"].get("correct", 0) / max(m["count"], 1), "images": m["count"],
            "steps": m["steps"], "seconds": m["seconds"], "stopped": m["stopped"]}


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


def evaluate_lm(model, blocks: list, bptt: int, rt: Runtime) -> dict:
    """Mean loss over every target of a split (each scored once) and its perplexity.

    `blocks` are [B, M + 1] token streams (data.text.batchify_eval); each block starts from a zero state and
    its windows of `bptt` tokens carry the state along."""
    model.eval()
    total, count = torch.zeros((), device=rt.device), torch.zeros((), dtype=torch.long, device=rt.device)
    bar = progress(sum(len(window_starts(block.shape[1], bptt)) for block in blocks), "evaluating", "window")
    with torch.inference_mode():
        for block in blocks:
            state = None
            for x, y in windows(block, bptt):
                loss, state = next_token_loss(model, x, y, state, rt, reduction="sum")
                total += loss
                count += y.numel()
                bar.update(1)
    bar.close()
    distributed.all_sum(total, count)  # every process scored its own streams
    loss = total.item() / int(count)
    return {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "tokens": int(count)}


def per_class_accuracy(confusion: torch.Tensor) -> list[float]:
    totals = confusion.sum(1).clamp_min(1)
    return (confusion.diag() / totals).tolist()

