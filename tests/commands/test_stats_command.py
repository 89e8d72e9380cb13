"""`torchlab stats DATASET`: measured mean and std per channel, checked against a direct computation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import cifar_split, synthetic_split, write_cifar, write_dataset
from tests.test_cli import one_line_error
from torchlab.cli import main


def direct(images: list[torch.Tensor]) -> tuple[list[float], list[float]]:
    """Mean and population std per channel over every pixel of uint8 images [C, H, W] of any size."""
    pixels = torch.cat([x.double().div(255).reshape(x.shape[0], -1) for x in images], 1)
    return pixels.mean(1).tolist(), pixels.std(1, correction=0).tolist()


def stats(capsys, *args) -> dict:
    assert main(["stats", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_fashion_mnist_text_and_json(tmp_path, capsys):
    folder = write_dataset(tmp_path / "f", n_train=120, n_test=10)
    images, _ = synthetic_split(120, seed=1)
    mean, std = direct(list(images[:, None]))
    assert main(["stats", "fashion-mnist", "--data-dir", str(folder)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("fashion-mnist: 120 training images, 94,080 pixels per channel")
    assert f"mean per channel  ({mean[0]:.4f},)" in out and f"std per channel   ({std[0]:.4f},)" in out
    assert f"transforms.Normalize(mean=({mean[0]:.4f},), std=({std[0]:.4f},))" in out
    assert "torchlab trains with mean (0.2860,), std (0.3530,)" in out  # rounded as the measured values above
    r = stats(capsys, "fashion-mnist", "--data-dir", str(folder))
    assert r["dataset"] == "fashion-mnist" and str(folder) in r["source"]
    assert r["images"] == 120 and r["pixels"] == 120 * 28 * 28
    assert r["mean"] == pytest.approx(mean, abs=1e-12) and r["std"] == pytest.approx(std, abs=1e-12)
    assert r["torchlab_uses"] == {"mean": [0.286], "std": [0.353]}
    assert r["seconds"] >= 0


def test_test_split_is_never_used(tmp_path, capsys):
    write_dataset(tmp_path / "a", n_train=50, n_test=10)
    write_dataset(tmp_path / "b", n_train=50, n_test=40)
    a = stats(capsys, "fashion-mnist", "--data-dir", str(tmp_path / "a"))
    b = stats(capsys, "mnist", "--data-dir", str(tmp_path / "b"))
    assert a["mean"] == b["mean"] and a["std"] == b["std"]
    assert b["torchlab_uses"] == {"mean": [0.1307], "std": [0.3081]}


def write_mixed_folder(root: Path) -> list[torch.Tensor]:
    """Images of different sizes and modes under root/train/<class>/; returns them as RGB uint8 [3, H, W]."""
    g = torch.Generator().manual_seed(0)
    expected = []
    for c, name in enumerate(("cats", "dogs")):
        for i, ((w, h), mode) in enumerate([((31, 17), "RGB"), ((12, 40), "L"), ((25, 25), "RGBA"), ((7, 9), "RGB")]):
            folder = root / "train" / name
            folder.mkdir(parents=True, exist_ok=True)
            channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
            a = torch.randint(0, 256, (h, w, channels), generator=g, dtype=torch.uint8).numpy()
            img = Image.fromarray(a[..., 0] if mode == "L" else a, mode)
            img.save(folder / f"{i}.png")
            expected.append(torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1))
        (root / "val" / name).mkdir(parents=True)
        Image.new("RGB", (50, 50), (255, 255, 255)).save(root / "val" / name / "white.png")  # must not count
    (root / "train" / "cats" / "notes.txt").write_text("not an image")
    return expected


def test_image_folder_over_native_sizes(tmp_path, capsys):
    expected = write_mixed_folder(tmp_path / "imgs")
    mean, std = direct(expected)
    r = stats(capsys, "image-folder", "--data-dir", str(tmp_path / "imgs"))
    assert r["images"] == 8 and r["pixels"] == sum(x.shape[1] * x.shape[2] for x in expected)
    assert r["mean"] == pytest.approx(mean, abs=1e-12) and r["std"] == pytest.approx(std, abs=1e-12)
    assert r["source"] == str(tmp_path / "imgs" / "train")
    assert "torchlab_uses" not in r
    assert main(["stats", "image-folder", "--data-dir", str(tmp_path / "imgs")]) == 0
    out = capsys.readouterr().out
    assert f"({mean[0]:.4f}, {mean[1]:.4f}, {mean[2]:.4f})" in out and "torchlab trains with" not in out


def test_image_folder_without_train_subfolder(tmp_path, capsys):
    root = tmp_path / "imgs"
    write_mixed_folder(tmp_path / "tmp")
    (tmp_path / "tmp" / "train").rename(root)
    r = stats(capsys, "image-folder", "--data-dir", str(root))
    assert r["images"] == 8 and r["source"] == str(root)


def test_cifar10_has_three_channels(tmp_path, capsys):
    write_cifar(tmp_path / "c", n_train_per_batch=4, n_test=3)
    images = torch.cat([cifar_split(4, seed=i)[0] for i in range(1, 6)])
    mean, std = direct(list(images))
    r = stats(capsys, "cifar10", "--data-dir", str(tmp_path / "c"))
    assert len(r["mean"]) == len(r["std"]) == 3 and r["images"] == 20 and r["pixels"] == 20 * 1024
    assert r["mean"] == pytest.approx(mean, abs=1e-12) and r["std"] == pytest.approx(std, abs=1e-12)
    assert r["torchlab_uses"]["mean"] == [0.4914, 0.4822, 0.4465]


@pytest.mark.parametrize("argv, fragments", [
    (["stats", "image-folder"], ["image-folder needs --data-dir DIR"]),
    (["stats", "image-folder", "--data-dir", "nowhere"], ["--data-dir nowhere: not a folder"]),
    (["stats", "fashion-mnist", "--data-dir", "nowhere"], ["dataset fashion-mnist not found", "nowhere"]),
    (["stats", "cifar10"], ["dataset cifar10 not found", "no --data-dir"]),
    (["stats", "svhn"], ["invalid choice: 'svhn'"]),
])
def test_errors_are_one_line(argv, fragments, capsys):
    one_line_error(capsys, main(argv), *fragments)


def test_folder_with_no_images(tmp_path, capsys):
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    (tmp_path / "imgs" / "a" / "notes.txt").write_text("x")
    one_line_error(capsys, main(["stats", "image-folder", "--data-dir", str(tmp_path / "imgs")]), "no image pixels")
