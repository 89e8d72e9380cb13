"""lrfind.py: the range test's curve, its suggestion, its early stop, and weights left as they were."""

from __future__ import annotations

import math

import pytest
import torch

from tests.conftest import assert_same_weights
from torchlab import lrfind
from torchlab.api import TASKS
from torchlab.config import resolve
from torchlab.errors import UserError
from torchlab.optim import build_optimizer
from torchlab.trainer import setup

pytestmark = pytest.mark.usefixtures("one_thread")


def pieces(data_dir, **settings):
    """What `torchlab train fashion-mnist` with these settings trains, and an optimizer for it."""
    cfg = resolve({"task": "fashion-mnist", "data_dir": str(data_dir), "device": "cpu", "val_size": 100,
                   "batch_size": 50, "precision": "fp32", "threads": 1, "channels_last": "off", "compile": "off",
                   "label_smoothing": 0.1, **settings})  # smoothing: the loss cannot reach 0 and rises at high lrs
    task = TASKS[cfg.task]
    cfg, data, rt, model, _steps, _notes = setup(task, cfg, torch.device("cpu"))
    optimizer, _ = build_optimizer(cfg, model, 1)
    return task, cfg, data, rt, model, optimizer


def test_curve_goes_down_then_up_and_weights_stay(tiny_data):
    task, cfg, data, rt, model, optimizer = pieces(tiny_data)
    optimizer.step()  # some optimizer state (none: no gradients), and a known lr to come back
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state_before = optimizer.state_dict()
    rng = torch.get_rng_state()
    s = lrfind.run_sweep(task, cfg, data, rt, model, optimizer, lrfind.Range(1e-5, 10, 120))
    assert_same_weights(before, model.state_dict())
    assert optimizer.param_groups[0]["lr"] == state_before["param_groups"][0]["lr"] == cfg.lr
    assert optimizer.state_dict()["state"] == state_before["state"]
    assert torch.equal(rng, torch.get_rng_state())
    low = min(range(len(s.smoothed)), key=s.smoothed.__getitem__)
    assert s.smoothed[low] < s.smoothed[0] * 0.8  # it went down...
    assert s.smoothed[-1] > s.smoothed[low] * 1.5  # ...and up again
    assert s.rule == lrfind.STEEPEST and s.lrs[0] <= s.suggestion < s.min_lr  # in the descending part
    assert s.lrs[0] == pytest.approx(1e-5) and all(b > a for a, b in zip(s.lrs, s.lrs[1:]))


def test_stops_when_the_loss_diverges(tiny_data):
    task, cfg, data, rt, model, optimizer = pieces(tiny_data, optimizer="sgd")
    s = lrfind.run_sweep(task, cfg, data, rt, model, optimizer, lrfind.Range(1e-4, 1e6, 100))
    assert s.diverged and len(s.lrs) < 100 and s.planned == 100
    assert all(math.isfinite(v) for v in s.losses)


def test_smoothing_and_suggestion_on_a_made_up_curve():
    assert lrfind.smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])  # bias-corrected: no pull to 0
    span = lrfind.Range(1e-6, 1.0, 100)
    lrs = [span.lr(i) for i in range(100)]
    x = [math.log10(lr) for lr in lrs]  # -6 .. 0; the loss falls fastest at 1e-3, least at 1e-1
    losses = [3 - math.tanh(2 * (v + 3)) + (8 * (v + 1) ** 2 if v > -1 else 0) for v in x]
    s = lrfind.make_sweep(span, lrs, losses, False)
    assert 1e-3 <= s.suggestion <= 3e-3 and s.rule == lrfind.STEEPEST
    assert s.min_lr > s.suggestion


@pytest.mark.parametrize("span, words", [((1.0, 1e-3, 100), "below --end"), ((1e-3, 1e-3, 100), "below --end"),
                                         ((0.0, 1.0, 100), "--start 0.0"), ((-1.0, 1.0, 100), "--start -1.0"),
                                         ((1e-7, math.inf, 100), "--end inf"), ((1e-7, 10, 9), "at least 10")])
def test_bad_ranges(span, words):
    with pytest.raises(UserError, match=words.replace("-", r"\-").replace(".", r"\.")):
        lrfind.Range(*span).check()
