"""`torchlab train` on image folders and CIFAR-10, end to end, plus eval and data on what it wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.conftest import write_cifar
from torchlab.cli import main
from torchlab.config import resolve
from torchlab.data import catalog
from torchlab.recipes import TASK_DEFAULTS

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: threads only add overhead on busy cores

COLOURS = {"blue": (30, 40, 220), "green": (30, 200, 40), "red": (220, 30, 40)}
# Fast flags for image-folder runs: small crops, small batches so a few epochs make a dozen steps.
FOLDER = ["--image-size", "16", "--device", "cpu", "--batch-size", "8", "--log-every", "2"]


def write_colour_folder(root: Path, per_class: int = 24, val: int | None = 6, seed: int = 0) -> Path:
    """Noisy 40 x 30 photos of three colours: root/train/<colour>/ and root/val/<colour>/ (val=None: one folder)."""
    g = torch.Generator().manual_seed(seed)
    for name, rgb in COLOURS.items():
        for i in range(per_class):
            split = "" if val is None else ("val" if i < val else "train")
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            noise = torch.randint(-35, 36, (30, 40, 3), generator=g)
            pixels = (torch.tensor(rgb) + noise).clamp(0, 255).to(torch.uint8)
            Image.fromarray(pixels.numpy()).save(folder / f"{name}{i:02d}.png")
    return root


@pytest.fixture
def colours(tmp_path) -> Path:
    return write_colour_folder(tmp_path / "colours")


def train_json(capsys, *argv) -> dict:
    code = main(["train", *argv, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def load(path):
    return torch.load(path, weights_only=True)


def test_image_folder_run_learns_and_writes_everything(colours, tmp_path, capsys):
    summary = train_json(capsys, "image-folder", "--data-dir", str(colours), *FOLDER, "--epochs", "4",
                         "--run-dir", "run")
    run = tmp_path / "run"
    assert summary["status"] == "finished" and summary["epochs"] == 4
    assert summary["steps"] == 4 * (54 // 8)
    assert summary["scored_split"] == "val" and "test_acc" not in summary
    assert summary["val_count"] == 18 and summary["val_scored"].startswith("best epoch")
    assert summary["val_acc"] >= 0.9, summary["history"]  # red, green and blue: 1.0 for 20 of 20 seeds tried
    assert summary["val_acc"] == pytest.approx(summary["best_val_acc"])
    assert set(summary["per_class_acc"]) == {"blue", "green", "red"}
    assert summary["model"] == "vgg-small"
    assert {"best.pt", "last.pt", "summary.json", "confusion_matrix.png", "config.toml"} <= {p.name for p in run.iterdir()}
    assert json.loads((run / "summary.json").read_text())["val_count"] == 18
    ckpt = load(run / "best.pt")
    assert ckpt["task"] == "image-folder" and ckpt["classes"] == ["blue", "green", "red"]
    assert ckpt["model_config"]["in_channels"] == 3 and ckpt["model_config"]["image_size"] == 16
    assert ckpt["model_config"]["num_classes"] == 3
    info = catalog.load("image-folder", str(colours), size=16)
    assert ckpt["mean"] == list(info.mean) and ckpt["std"] == list(info.std) and len(ckpt["mean"]) == 3
    assert ckpt["mean"][0] != ckpt["mean"][1]  # the folder's own statistics, not a default
    cfg = ckpt["train_config"]
    # TASK_DEFAULTS for image-folder, except the flags given.
    assert cfg["model"] == "vgg-small" and cfg["augment"] is True and cfg["optimizer"] == "sgd"
    assert cfg["schedule"] == "onecycle" and cfg["label_smoothing"] == 0.1 and cfg["lr"] == 0.05
    assert cfg["batch_size"] == 8 and cfg["image_size"] == 16 and cfg["epochs"] == 4

    capsys.readouterr()
    assert main(["eval", str(run / "best.pt"), "--json"]) == 0  # data dir from the checkpoint's config
    result = json.loads(capsys.readouterr().out)
    assert result["split"] == "val" and result["count"] == 18
    assert result["val_acc"] == pytest.approx(summary["val_acc"])
    assert sum(map(sum, result["confusion"])) == 18 and (run / "best-confusion.png").exists()
    assert main(["eval", str(run), "--data-dir", str(colours)]) == 0
    out = capsys.readouterr().out
    assert "val accuracy" in out and "on 18 images" in out and "red" in out


def test_text_summary_says_val_was_scored(colours, capsys):
    assert main(["train", "image-folder", "--data-dir", str(colours), *FOLDER, "--epochs", "1", "--run-dir", "r",
                 "--model", "vgg-tiny"]) == 0
    out = capsys.readouterr().out
    assert "val accuracy" in out and "on 18 images" in out and "no test split" in out


def test_task_defaults_yield_to_flags_toml_and_recipe(tmp_path):
    cfg = resolve({"task": "image-folder"})
    for key, value in TASK_DEFAULTS["image-folder"].items():
        assert getattr(cfg, key) == value
    assert resolve({"task": "image-folder", "model": "notes-cnn", "augment": False}).model == "notes-cnn"
    assert resolve({"task": "image-folder", "augment": False}).augment is False
    (tmp_path / "c.toml").write_text('epochs = 2\nmodel = "vgg-tiny"\n')
    cfg = resolve({"task": "image-folder"}, str(tmp_path / "c.toml"))
    assert (cfg.epochs, cfg.model, cfg.optimizer) == (2, "vgg-tiny", "sgd")
    assert resolve({"task": "image-folder", "recipe": "strong"}).tta is True
    assert resolve({"task": "fashion-mnist"}).model == "notes-cnn"  # other tasks keep the notes' settings


def test_one_folder_layout_splits_and_flags_override_defaults(tmp_path, capsys):
    root = write_colour_folder(tmp_path / "one", per_class=12, val=None)
    (root / "red" / "notes.txt").write_text("not an image")
    summary = train_json(capsys, "image-folder", "--data-dir", str(root), *FOLDER, "--epochs", "1",
                         "--val-fraction", "0.25", "--model", "vgg-tiny", "--no-augment", "--run-dir", "r")
    assert summary["scored_split"] == "val" and summary["val_count"] == 9  # 3 of each 12
    assert summary["steps"] == 27 // 8
    assert summary["model"] == "vgg-tiny"
    cfg = load(tmp_path / "r" / "last.pt")["train_config"]
    assert cfg["model"] == "vgg-tiny" and cfg["augment"] is False and cfg["optimizer"] == "sgd"
    assert cfg["val_fraction"] == 0.25
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "r" / "last.pt"), "--json"]) == 0  # the same seeded split again
    result = json.loads(capsys.readouterr().out)
    assert result["split"] == "val" and result["count"] == 9


def test_image_folder_with_test_subfolder_scores_test(colours, tmp_path, capsys):
    write_colour_folder(tmp_path / "extra", per_class=4, val=None, seed=9)
    (tmp_path / "extra").rename(colours / "test")
    summary = train_json(capsys, "image-folder", "--data-dir", str(colours), *FOLDER, "--epochs", "1",
                         "--model", "vgg-tiny", "--run-dir", "r")
    assert summary["scored_split"] == "test" and summary["test_count"] == 12 and "val_count" not in summary
    assert summary["best_val_acc"] is not None


def test_one_folder_without_validation_is_refused(tmp_path, capsys):
    from tests.test_cli import one_line_error

    root = write_colour_folder(tmp_path / "one", per_class=4, val=None)
    code = main(["train", "image-folder", "--data-dir", str(root), *FOLDER, "--val-fraction", "0"])
    one_line_error(capsys, code, "nothing to evaluate on")
    one_line_error(capsys, main(["train", "image-folder", *FOLDER]), "image-folder needs --data-dir")


def test_a_default_batch_larger_than_a_small_folder_becomes_the_folder(tmp_path, capsys):
    from tests.test_cli import one_line_error

    root = write_colour_folder(tmp_path / "few", per_class=9, val=2)  # 21 training images; the default batch is 32
    flags = ["--image-size", "16", "--device", "cpu", "--epochs", "1", "--model", "vgg-tiny"]
    assert main(["train", "image-folder", "--data-dir", str(root), *flags, "--run-dir", "r", "--json"]) == 0
    out = capsys.readouterr()
    summary = json.loads(out.out)
    assert summary["status"] == "finished" and summary["steps"] == 1
    assert "batch size 21 (the whole training set): the default 32 is more than its 21 images" in out.err
    assert "batch_size = 21\n" in (tmp_path / "r" / "config.toml").read_text()  # resume and --config agree
    code = main(["train", "image-folder", "--data-dir", str(root), *flags, "--batch-size", "32", "--run-dir", "r3"])
    one_line_error(capsys, code, "--batch-size 32: larger than the 21 training images")  # asked for: an error
    (tmp_path / "batch.toml").write_text("batch_size = 32\n")
    code = main(["train", "image-folder", "--data-dir", str(root), *flags, "--config", "batch.toml", "--run-dir", "r4"])
    one_line_error(capsys, code, "--batch-size 32: larger than the 21 training images")  # a file's value too


def test_image_folder_max_steps_then_resume_equals_straight_run(colours, tmp_path):
    args = ["train", "image-folder", "--data-dir", str(colours), *FOLDER, "--epochs", "2", "--model", "vgg-tiny"]
    assert main([*args, "--run-dir", "straight"]) == 0
    assert main([*args, "--run-dir", "dry", "--max-steps", "4"]) == 0
    state = load(tmp_path / "dry" / "last.pt")["state"]
    assert state["global_step"] == 4 and state["step_in_epoch"] == 4 and state["epoch"] == 0
    assert main(["train", "--resume", "dry", "--max-steps", "0"]) == 0
    straight, resumed = load(tmp_path / "straight" / "last.pt"), load(tmp_path / "dry" / "last.pt")
    assert resumed["state"]["global_step"] == straight["state"]["global_step"] == 12
    for key, value in straight["model_state"].items():
        assert torch.equal(value, resumed["model_state"][key]), key


def test_cifar10_trains_and_scores_the_whole_test_split(tmp_path, capsys):
    data = write_cifar(tmp_path / "cifar", n_train_per_batch=20, n_test=30)
    summary = train_json(capsys, "cifar10", "--data-dir", str(data), "--device", "cpu", "--val-size", "20",
                         "--batch-size", "10", "--eval-batch-size", "64", "--log-every", "2", "--epochs", "4",
                         "--lr", "3e-3", "--run-dir", "c")
    assert summary["status"] == "finished" and summary["steps"] == 4 * (80 // 10)
    assert summary["scored_split"] == "test" and summary["test_count"] == 30
    assert summary["test_acc"] >= 0.8  # the colour blocks are learnable (1.0 for the seeds tried)
    assert summary["model"] == "notes-cnn"
    ckpt = load(tmp_path / "c" / "best.pt")
    assert ckpt["model_config"]["in_channels"] == 3 and ckpt["model_config"]["image_size"] == 32
    assert ckpt["classes"][0] == "airplane" and len(ckpt["classes"]) == 10
    assert ckpt["mean"] == list(catalog.CIFAR_MEAN)
    assert ckpt["model_state"]["conv1.weight"].shape[1] == 3
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "c"), "--data-dir", str(tmp_path / "cifar"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["split"] == "test" and result["count"] == 30 and result["task"] == "cifar10"
    assert result["test_acc"] == pytest.approx(summary["test_acc"])


def test_data_command_counts(colours, tmp_path, capsys):
    write_cifar(tmp_path / "cifar", n_train_per_batch=3, n_test=7)
    assert main(["data", "cifar10", "--data-dir", str(tmp_path / "cifar"), "--offline"]) == 0
    assert "cifar10: 15 train + 7 test images (3, 32, 32), 10 classes" in capsys.readouterr().out
    assert main(["data", "image-folder", "--data-dir", str(colours), "--offline"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("image-folder: 54 train + 18 val images") and "3 classes" in out


def test_resume_refuses_an_image_folder_whose_classes_changed(tmp_path, capsys):
    root = tmp_path / "imgs"
    for split, n in (("train", 8), ("val", 2)):
        for c, colour in enumerate(((220, 30, 30), (30, 30, 220))):
            folder = root / split / ("red", "blue")[c]
            folder.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (20, 20), colour).save(folder / f"{i}.png")
    args = ["train", "image-folder", "--data-dir", str(root), "--image-size", "16", "--batch-size", "4",
            "--epochs", "2", "--max-steps", "2", "--device", "cpu", "--run-dir", "r", "--quiet"]
    assert main(args) == 0
    (root / "train" / "red").rename(root / "train" / "crimson")  # the class names (and order) change
    (root / "val" / "red").rename(root / "val" / "crimson")
    assert main(["train", "--resume", "r", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("torchlab: error: --resume: the data changed") and "Traceback" not in "\n".join(err)
