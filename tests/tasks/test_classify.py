"""Training runs end to end on the tiny synthetic dataset, including exact resume."""

import json
import signal
import sys
import tomllib

import pytest
import torch

from tests.conftest import TINY, assert_same_weights, weights
from torchlab.cli import main
from torchlab.data.vision import TensorLoader
from torchlab.recipes import FAST, FAST_TARGETS


def run(args, capsys=None):
    code = main(args)
    return code, (capsys.readouterr() if capsys else None)






def test_train_writes_a_complete_run(tiny_data, tmp_path, capsys):
    code, out = run(["train", "fashion-mnist", "--data-dir", str(tiny_data), *TINY, "--epochs", "2",
                     "--run-dir", "r", "--json"], capsys)
    assert code == 0
    summary = json.loads(out.out)
    assert summary["status"] == "finished" and summary["epochs"] == 2
    assert summary["test_count"] == 250  # the whole test set, including the last partial batch
    assert len(summary["history"]) == 2 and summary["steps"] == 2 * (500 // 50)
    names = {p.name for p in (tmp_path / "r").iterdir()}
    assert {"last.pt", "best.pt", "config.toml", "summary.json", "confusion_matrix.png"} <= names
    ckpt = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    assert ckpt["classes"][0] == "T-shirt/top" and ckpt["train_config"]["epochs"] == 2
    assert ckpt["state"]["epoch"] == 2 and ckpt["optimizer_state"]["state"]


def test_tensorboard_tags(tiny_data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main(["train", "fashion-mnist", "--data-dir", str(tiny_data), *TINY, "--epochs", "2", "--run-dir", "r"]) == 0
    events = EventAccumulator(str(tmp_path / "r"), size_guidance={"images": 0}).Reload()
    tags = events.Tags()
    assert {"train/loss", "val/loss", "val/acc", "lr", "test/acc"} <= set(tags["scalars"])
    assert {"train/samples", "test/confusion_matrix"} <= set(tags["images"])
    steps = [e.step for e in events.Scalars("val/acc")]
    assert steps == [10, 20]  # one global step axis: steps, not epochs
    assert [e.step for e in events.Scalars("train/loss")][:3] == [2, 4, 6]


def test_learns_the_synthetic_task(tiny_data, capsys):
    code, out = run(["train", "fashion-mnist", "--data-dir", str(tiny_data), *TINY, "--epochs", "4",
                     "--run-dir", "r", "--json", "--lr", "3e-3"], capsys)
    assert code == 0 and json.loads(out.out)["test_acc"] > 0.9


def test_early_stopping(tiny_data, capsys):
    # lr 0 never improves after the first epoch, so patience 2 stops after epoch 3.
    code, out = run(["train", "fashion-mnist", "--data-dir", str(tiny_data), *TINY, "--epochs", "9", "--lr", "0",
                     "--patience", "2", "--run-dir", "r", "--json"], capsys)
    summary = json.loads(out.out)
    assert code == 0 and summary["status"] == "early-stopped" and summary["epochs"] == 3


def test_max_steps_dry_run(tiny_data, capsys):
    code, out = run(["train", "mnist", "--data-dir", str(tiny_data), *TINY, "--max-steps", "3", "--run-dir", "r",
                     "--json"], capsys)
    summary = json.loads(out.out)
    assert code == 0 and summary["steps"] == 3 and summary["status"] == "max-steps"
    assert summary["epochs"] == 0 and summary["epochs_done"] == 0.3 and summary["best_epoch"] == 1
    assert summary["history"][0]["partial"] and "eval_sample" not in summary  # 100 val, 250 test: all scored


def test_max_steps_run_scores_a_sample_and_says_so(tiny_data, tmp_path, capsys, monkeypatch):
    from torchlab.tasks import classify

    monkeypatch.setattr(classify, "EVAL_SAMPLE_IMAGES", 40)
    code, out = run(["train", "fashion-mnist", "--data-dir", str(tiny_data), *TINY, "--max-steps", "3",
                     "--run-dir", "r"], capsys)
    assert code == 0
    assert "--max-steps run: validation and test score a sample of 40 of 100 val and 40 of 250 test images " \
           "(seeded), not the whole splits" in out.err
    assert "epoch 1/3 (partial)" in out.err
    lines = out.out.splitlines()
    assert lines[0].startswith("run r max-steps: 0.3 epochs, 3 steps")
    assert "test accuracy" in lines[2] and "on 40 images (best epoch 1; a sample of 40 of 250 test images, " \
                                              "--max-steps run)" in lines[2]
    assert "TensorBoard: torchlab tensorboard r" in lines[3] and "tensorboard --logdir" not in out.out
    assert lines[4] == "stopped by --max-steps; finish it with: torchlab train --resume r --max-steps 0"
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["eval_sample"] == {"unit": "images", "val": 40, "test": 40} and summary["test_count"] == 40
    assert torch.load(tmp_path / "r" / "last.pt", weights_only=True)["state"]["best_sampled"]
    # Finished without the limit, the run scores the whole splits; a sample's best never beats a whole one.
    assert main(["train", "--resume", "r", "--max-steps", "0", "--epochs", "1", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "finished" and summary["test_count"] == 250 and "eval_sample" not in summary
    assert summary["best_epoch"] == 1 and summary["best_val_acc"] == summary["history"][-1]["val_acc"]
    assert summary["test_scored"] == "best epoch 1"


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_an_explicit_data_dir_without_the_data_stops_before_any_run(tiny_data, tmp_path, capsys, monkeypatch, make):
    from tests.test_cli import one_line_error

    monkeypatch.setenv("TORCHLAB_DATA", str(tiny_data))  # would be found: it must not be used
    folder = tmp_path / "no-such-dir"
    if make == "empty":
        folder.mkdir()
    code = main(["train", "fashion-mnist", "--data-dir", str(folder), *TINY, "--run-dir", "r"])
    one_line_error(capsys, code, f"dataset fashion-mnist not found in --data-dir {folder}",
                   "looked for train-images-idx3-ubyte")
    assert not (tmp_path / "r").exists()  # no config.toml recording a folder that was never read


def interrupt_after(monkeypatch, batches: int):
    """Send a real SIGINT after `batches` training batches (the handler lets the step finish)."""
    original = TensorLoader.epoch
    count = {"n": 0}

    def epoch(self, *args, **kwargs):
        for item in original(self, *args, **kwargs):
            if self.train:
                count["n"] += 1
                if count["n"] == batches + 1:
                    signal.raise_signal(signal.SIGINT)
            yield item

    monkeypatch.setattr(TensorLoader, "epoch", epoch)


@pytest.mark.parametrize("model, extra, stop_at", [
    ("notes-cnn", [], 4),  # mid-epoch
    ("notes-cnn", [], 10),  # exactly at an epoch boundary
    ("vgg-tiny", ["--augment", "--schedule", "onecycle", "--optimizer", "sgd", "--lr", "0.05"], 13),
    ("vgg-tiny", ["--augment", "--erase", "0.5", "--ema", "0.9"], 6),  # erasing draws and the average resume
])
def test_interrupted_and_resumed_equals_uninterrupted(tiny_data, tmp_path, monkeypatch, capsys, model, extra, stop_at):
    args = ["train", "fashion-mnist", "--data-dir", str(tiny_data), *TINY, "--epochs", "3", "--model", model, *extra]
    assert main([*args, "--run-dir", "straight"]) == 0
    with monkeypatch.context() as m:
        interrupt_after(m, stop_at)
        assert main([*args, "--run-dir", "broken"]) == 130
    err = capsys.readouterr().err
    assert "torchlab train --resume broken" in err
    state = torch.load(tmp_path / "broken" / "last.pt", weights_only=True)["state"]
    assert state["global_step"] == stop_at
    assert json.loads((tmp_path / "broken" / "summary.json").read_text())["status"] == "interrupted"
    assert main(["train", "--resume", "broken"]) == 0
    assert_same_weights(weights(tmp_path / "straight" / "last.pt"), weights(tmp_path / "broken" / "last.pt"))
    assert_same_weights(weights(tmp_path / "straight" / "best.pt"), weights(tmp_path / "broken" / "best.pt"))
    if "--ema" in extra:
        straight, broken = (torch.load(tmp_path / d / "last.pt", weights_only=True) for d in ("straight", "broken"))
        assert_same_weights(straight["train_model_state"], broken["train_model_state"])


def test_ema_scores_the_average_and_batch_norm_statistics_follow_it(tiny_data, tmp_path):
    args = ["train", "fashion-mnist", "--data-dir", str(tiny_data), *TINY, "--epochs", "1", "--model", "vgg-tiny",
            "--ema", "0.5"]
    assert main([*args, "--run-dir", "r"]) == 0
    ckpt = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    trained, average = ckpt["train_model_state"], ckpt["model_state"]
    assert ckpt["ema_updates"] == ckpt["state"]["global_step"]
    assert trained.keys() == average.keys()
    mean = next(k for k in average if k.endswith("running_mean"))
    assert not torch.equal(trained[mean], average[mean])  # buffers are averaged too (use_buffers)
    assert not torch.equal(trained["head.weight"], average["head.weight"])


def test_max_steps_run_resumes_to_the_same_weights(tiny_data, tmp_path):
    args = ["train", "fashion-mnist", "--data-dir", str(tiny_data), *TINY, "--epochs", "2", "--augment"]
    assert main([*args, "--run-dir", "straight"]) == 0
    assert main([*args, "--run-dir", "dry", "--max-steps", "7"]) == 0
    assert torch.load(tmp_path / "dry" / "last.pt", weights_only=True)["state"]["step_in_epoch"] == 7
    assert main(["train", "--resume", "dry", "--max-steps", "0"]) == 0
    assert_same_weights(weights(tmp_path / "straight" / "last.pt"), weights(tmp_path / "dry" / "last.pt"))


def test_resume_can_extend_a_constant_schedule_but_not_change_lr(tiny_data, tmp_path, capsys):
    args = ["train", "fashion-mnist", "--data-dir", str(tiny_data), *TINY, "--run-dir", "r"]
    assert main([*args, "--epochs", "1"]) == 0
    assert main(["train", "--resume", "r", "--lr", "0.5"]) == 2
    assert "--lr cannot change when resuming" in capsys.readouterr().err
    assert main(["train", "--resume", "r", "--epochs", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["epochs"] == 2


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path, capsys):
    args = ["train", "fashion-mnist", "--data-dir", str(tiny_data), *TINY, "--run-dir", "r", "--optimizer", "sgd"]
    assert main([*args, "--epochs", "1"]) == 0
    good = (tmp_path / "r" / "last.pt").read_bytes()
    capsys.readouterr()
    # Resuming with a lr that diverges is refused, so start a fresh run that diverges instead.
    code = main(["train", "fashion-mnist", "--data-dir", str(tiny_data), *TINY, "--run-dir", "r2",
                 "--optimizer", "sgd", "--lr", "1e30", "--momentum", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("torchlab: error: loss became") and "at step" in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert not (tmp_path / "r2" / "last.pt").exists()
    assert json.loads((tmp_path / "r2" / "summary.json").read_text())["status"] == "failed"
    assert (tmp_path / "r" / "last.pt").read_bytes() == good


def test_training_runs_on_a_bare_machine_without_tensorboard_tqdm_or_matplotlib(tiny_data, tmp_path, monkeypatch,
                                                                                 capsys):
    """benchmarks/gpu.sh runs where only torch and torchvision are installed."""
    for module in ("tqdm", "torch.utils.tensorboard", "matplotlib"):
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    code = main(["train", "fashion-mnist", "--data-dir", str(tiny_data), *TINY, "--epochs", "1", "--run-dir", "r",
                 "--json"])
    out = capsys.readouterr()
    assert code == 0
    assert "tensorboard package is not installed" in out.err
    summary = json.loads(out.out)
    assert summary["status"] == "finished" and summary["test_count"] == 250
    assert (tmp_path / "r" / "best.pt").exists() and not list((tmp_path / "r").glob("events.out.tfevents.*"))


def test_fast_recipe_lowers_the_loss_on_tiny_data(tiny_data, tmp_path, capsys):
    code = main(["train", "fashion-mnist", "--data-dir", str(tiny_data), *TINY, "--recipe", "fast", "--model",
                 "vgg-tiny", "--epochs", "3", "--batch-size", "50", "--run-dir", "r", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["recipe"] == "fast"
    losses = [h["train_loss"] for h in summary["history"]]
    assert losses[-1] < losses[0]
    cfg = tomllib.loads((tmp_path / "r" / "config.toml").read_text())
    assert cfg["erase"] == FAST_TARGETS["cpu"][94]["erase"] > 0 and cfg["optimizer"] == FAST["optimizer"]
    # The device settings are saved as chosen, so that --config and --resume compute the same way.
    assert cfg["precision"] in ("fp32", "bf16") and cfg["channels_last"] in ("on", "off") and cfg["threads"] >= 1
