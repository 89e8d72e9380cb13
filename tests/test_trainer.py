"""The run lifecycle, once, with a tiny fake task: fit y = 2x + 1 with nn.Linear, validated by mean squared
error (lower is better, unlike accuracy)."""

from __future__ import annotations

import dataclasses
import json
import signal
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from torchlab import logger, runtime, trainer
from torchlab.config import RunConfig
from torchlab.errors import Interrupted, UserError


@dataclass
class LineConfig:
    features: int = 1


class Line(nn.Linear):
    def __init__(self):
        super().__init__(1, 1)
        self.config = LineConfig()


class FakeTask:
    """y = 2x + 1 from 64 training points in batches of cfg.batch_size; validation: MSE on 32 other points."""

    unit, score, higher_is_better = "points", "val_mse", False
    nan_hint = "lower --lr"
    last_weights = "last weights"

    def __init__(self, crash_at: int = 0, diverge: bool = False):
        self.crash_at, self.diverge, self.steps = crash_at, diverge, 0

    def model_name(self, cfg):
        return "line"

    def run_name(self, cfg):
        return "line"

    def prepare(self, cfg, device, resume):
        g = torch.Generator().manual_seed(0)
        x = torch.rand(96, 1, generator=g)  # [N, 1]
        return {"x": x[:64], "y": 2 * x[:64] + 1, "vx": x[64:], "vy": 2 * x[64:] + 1}

    def total_steps(self, cfg, data):
        return cfg.epochs * self.steps_in_epoch(cfg, data, 0)

    def steps_in_epoch(self, cfg, data, epoch):
        return 64 // cfg.batch_size

    def samples_per_step(self, cfg):
        return cfg.batch_size

    def batches(self, cfg, data, epoch, start):
        order = torch.randperm(64, generator=torch.Generator().manual_seed(epoch))
        for i in range(start, self.steps_in_epoch(cfg, data, epoch)):
            rows = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            yield data["x"][rows], data["y"][rows]

    def workload(self, cfg, data, steps):
        return None  # nothing to time: runtime.choose keeps PyTorch's defaults

    def settings(self, rt):
        return {}

    def build(self, cfg, data, rt):
        return Line(), []

    def loss_fn(self, cfg):
        def loss_fn(model, batch, carry, rt):
            self.steps += 1
            if self.crash_at and self.steps == self.crash_at:
                raise RuntimeError("the fake task broke\nsecond line")
            x, y = batch
            loss = ((model(x) - y) ** 2).mean() * (float("nan") if self.diverge else 1.0)
            return loss, len(y), {}, (carry or 0) + 1  # the carry counts the steps of the epoch

        return loss_fn

    def restore_carry(self, ckpt, state, device):
        return ckpt["carry"] if state.step_in_epoch else None

    def samples(self, data):
        return None

    def train_metrics(self, metrics):
        return {}

    def validate(self, s):
        with torch.no_grad():
            return {"val_mse": float(((s.scored(s.data["vx"]) - s.data["vy"]) ** 2).mean())}

    def test(self, s, scored):
        return {"test_mse": self.validate(s)["val_mse"], "test_scored": scored}, {}

    def checkpoint_extra(self, s):
        return {"carry": s.carry}

    def summary_extra(self, s):
        return {"model": "line"}

    def describe(self, s, notes):
        return notes

    def epoch_line(self, record, epochs, improved):
        return f"epoch {record['epoch']}: {record['val_mse']:.4f}"


def config(tmp_path, **changes) -> RunConfig:
    values = dict(task="line", epochs=4, batch_size=16, optimizer="sgd", lr=0.5, momentum=0.0, device="cpu",
                  precision="fp32", threads=1, log_every=1, run_dir=str(tmp_path / "run"), seed=0)
    return dataclasses.replace(RunConfig(), **{**values, **changes})


def summary(tmp_path) -> dict:
    return json.loads((tmp_path / "run" / "summary.json").read_text())


def test_a_run_trains_validates_keeps_the_lowest_score_and_tests_those_weights(tmp_path):
    run = trainer.train(FakeTask(), config(tmp_path), ctx=trainer.Context(quiet=True))
    mse = [h["val_mse"] for h in run.history]
    assert len(mse) == 4 and mse[-1] < mse[0]
    assert run.summary["status"] == "finished" and run.summary["steps"] == 16
    best = min(range(4), key=mse.__getitem__)
    assert run.best == {"val_mse": mse[best], "epoch": best + 1}
    assert run.summary["test_scored"] == f"best epoch {best + 1}"
    assert run.summary["test_mse"] == pytest.approx(mse[best])  # the test used the kept weights
    assert run.summary["points_per_second"] > 0 and run.run_dir == tmp_path / "run"
    saved = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert saved["task"] == "line" and saved["state"]["best_epoch"] == best + 1


def test_max_steps_then_resume_equals_an_uninterrupted_run_and_restores_the_carry(tmp_path):
    straight = trainer.train(FakeTask(), config(tmp_path / "a"), ctx=trainer.Context(quiet=True))
    cfg = config(tmp_path / "b", max_steps=6)  # part-way through the second epoch
    stopped = trainer.train(FakeTask(), cfg, ctx=trainer.Context(quiet=True))
    assert stopped.summary["status"] == "max-steps"
    last = torch.load(tmp_path / "b" / "run" / "last.pt", weights_only=False)
    assert last["state"]["step_in_epoch"] == 2 and last["carry"] == 2
    last["path"] = str(tmp_path / "b" / "run" / "last.pt")
    resumed = trainer.train(FakeTask(), dataclasses.replace(cfg, max_steps=0), resume=last,
                            run_dir=tmp_path / "b" / "run", ctx=trainer.Context(quiet=True))
    assert resumed.summary["steps"] == 16
    assert [h["val_mse"] for h in resumed.history][-1] == pytest.approx(straight.history[-1]["val_mse"], abs=1e-7)
    assert torch.equal(resumed.model.weight, straight.model.weight)


def test_early_stopping_counts_epochs_without_a_lower_score(tmp_path):
    run = trainer.train(FakeTask(), config(tmp_path, epochs=30, lr=1.9, patience=1),
                        ctx=trainer.Context(quiet=True))  # lr 1.9 oscillates, so some epoch gets worse
    assert run.summary["status"] == "early-stopped" and run.summary["epochs"] < 30


def test_a_nan_loss_is_a_one_line_error_and_the_run_says_failed(tmp_path):
    with pytest.raises(UserError, match="loss became nan at step 1 .*no checkpoint was written yet"):
        trainer.train(FakeTask(diverge=True), config(tmp_path), ctx=trainer.Context(quiet=True))
    assert summary(tmp_path)["status"] == "failed"


def test_a_crash_leaves_the_run_failed_with_its_error_not_running(tmp_path):
    with pytest.raises(RuntimeError, match="the fake task broke"):
        trainer.train(FakeTask(crash_at=6), config(tmp_path), ctx=trainer.Context(quiet=True))
    s = summary(tmp_path)
    assert s["status"] == "failed" and s["error"] == "RuntimeError: the fake task broke"
    assert s["epochs"] == 1  # the first epoch finished and was kept
    assert (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize("sig, error", [(signal.SIGINT, Interrupted), (signal.SIGTERM, trainer.Terminated)])
def test_ctrl_c_and_sigterm_leave_the_run_interrupted(tmp_path, monkeypatch, sig, error):
    task = FakeTask()
    original = task.loss_fn

    def loss_fn(cfg):
        inner = original(cfg)

        def signalling(model, batch, carry, rt):
            if task.steps == 5:
                signal.raise_signal(sig)
            return inner(model, batch, carry, rt)

        return signalling

    monkeypatch.setattr(task, "loss_fn", loss_fn)
    with pytest.raises(error):
        trainer.train(task, config(tmp_path), ctx=trainer.Context(quiet=True))
    s = summary(tmp_path)
    assert s["status"] == "interrupted"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back


def test_the_context_keeps_a_quiet_run_quiet(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(logger, "QUIET", True)  # the context decides, not the --quiet flag's global
    trainer.train(FakeTask(), config(tmp_path), ctx=trainer.Context(quiet=True))
    assert capsys.readouterr().err == ""
    trainer.train(FakeTask(), config(tmp_path, run_dir=str(tmp_path / "loud")), ctx=trainer.Context(quiet=False))
    assert "epoch 4:" in capsys.readouterr().err


def test_old_states_are_read_with_their_names_of_format_1():
    image = trainer.State.restore({"epoch": 2, "best_acc": 0.9, "best_epoch": 2, "images_seen": 10, "history": []})
    assert (image.best, image.seen) == (0.9, 10)
    none_yet = trainer.State.restore({"best_acc": -1.0, "images_seen": 0})
    assert none_yet.best is None
    text = trainer.State.restore({"best_ppl": float("inf"), "best_epoch": 0, "tokens_seen": 7})
    assert (text.best, text.seen) == (None, 7)


def test_runtime_choose_takes_defaults_without_a_workload():
    rt, _ = runtime.choose(torch.device("cpu"), runtime.Requested("fp32", "off", "off", 1), None)
    assert rt.device.type == "cpu"


class Sampled(dict):
    sampled = True  # as a --max-steps run's data that scores a sample of val and test


class SampledTask(FakeTask):
    """Its (sampled) validation flatters: a score of 0 that no whole validation can beat."""

    def prepare(self, cfg, device, resume):
        return Sampled(super().prepare(cfg, device, resume))

    def validate(self, s):
        return {"val_mse": 0.0}


def test_a_best_score_from_a_sample_gives_way_to_the_first_whole_validation(tmp_path):
    cfg = config(tmp_path, max_steps=6)  # half-way through the second epoch of 4 steps
    stopped = trainer.train(SampledTask(), cfg, ctx=trainer.Context(quiet=True))
    assert stopped.best == {"val_mse": 0.0, "epoch": 1}
    assert stopped.summary["epochs"] == 1 and stopped.summary["epochs_done"] == 1.5
    assert [step for step, _ in stopped.summary["loss_log"]] == [1, 2, 3, 4, 5, 6]  # log_every 1
    assert stopped.history[-1]["partial"] and "partial" not in stopped.history[0]
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert last["state"]["best_sampled"]
    last["path"] = str(tmp_path / "run" / "last.pt")
    resumed = trainer.train(FakeTask(), dataclasses.replace(cfg, max_steps=0), resume=last, run_dir=tmp_path / "run",
                            ctx=trainer.Context(quiet=True))
    whole = [h["val_mse"] for h in resumed.history[2:]]  # epochs 2, 3 and 4, validated on the whole split
    best = min(range(3), key=whole.__getitem__)
    assert resumed.best == {"val_mse": whole[best], "epoch": best + 2} and whole[best] > 0
    assert resumed.summary["epochs_done"] == 4 and len(resumed.summary["loss_log"]) == 16


class Settled(dict):
    settings = {"batch_size": 32}  # what a task's data decided, e.g. a default batch cut to the training set


def test_settings_the_data_decides_are_used_and_saved(tmp_path):
    class Task(FakeTask):
        def prepare(self, cfg, device, resume):
            return Settled(super().prepare(cfg, device, resume))

    run = trainer.train(Task(), config(tmp_path, epochs=1), ctx=trainer.Context(quiet=True))
    assert run.summary["steps"] == 64 // 32 and run.config.batch_size == 32
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["train_config"]["batch_size"] == 32
