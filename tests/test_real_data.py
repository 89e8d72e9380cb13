"""Smoke tests on the real datasets in ../shared/data; skipped where that folder is absent."""

import json

import pytest

from tests.conftest import SHARED_DATA
from torchlab.cli import main

pytestmark = pytest.mark.skipif(not (SHARED_DATA / "fashion-mnist").is_dir(), reason=f"no real data at {SHARED_DATA}")


def test_real_datasets_are_found_and_pass_their_checksums(capsys):
    assert main(["data", "--data-dir", str(SHARED_DATA), "--offline"]) == 0
    out = capsys.readouterr().out
    assert "fashion-mnist: 60000 train + 10000 test images (1, 28, 28), 10 classes, checked" in out
    assert "mnist: 60000 train + 10000 test images" in out


def test_real_fashion_mnist_short_run(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("TORCHLAB_DATA", str(SHARED_DATA))  # found through the environment this time
    code = main(["train", "fashion-mnist", "--max-steps", "40", "--batch-size", "128", "--run-dir", "real", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["steps"] == 40
    assert summary["test_count"] == 1000  # a --max-steps run scores a seeded sample of the test set, and says so
    assert summary["eval_sample"] == {"unit": "images", "val": 1000, "test": 1000}
    assert summary["test_acc"] > 0.6  # 40 steps of Adam already learn a lot; chance is 0.1
    assert main(["eval", "real/best.pt", "--json"]) == 0
    whole = json.loads(capsys.readouterr().out)
    assert whole["count"] == 10000 and whole["test_acc"] > 0.6  # eval scores the whole split


def test_real_stats_derive_the_notes_normalisation(capsys):
    """The notes type in 0.286 / 0.353 for Fashion-MNIST; `stats` measures them from the training images."""
    assert main(["stats", "fashion-mnist", "--data-dir", str(SHARED_DATA), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["images"] == 60000 and r["pixels"] == 60000 * 28 * 28
    assert r["mean"][0] == pytest.approx(0.2860, abs=5e-5) and r["std"][0] == pytest.approx(0.3530, abs=5e-5)


ANTS_BEES = SHARED_DATA / "hymenoptera_data"


@pytest.mark.skipif(not ANTS_BEES.is_dir(), reason="no ants/bees photos")
def test_real_image_folder_photos(capsys, tmp_path):
    photo = ANTS_BEES / "train" / "ants" / "0013035.jpg"
    assert main(["image", str(photo), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)[0]
    assert r["mode"] == "RGB" and r["array"]["shape"] == [r["size"][1], r["size"][0], 3]
    assert r["tensor"]["shape"] == [3, r["size"][1], r["size"][0]] and r["tensor"]["max"] <= 1.0
    # A few steps on the real folder: train/ and val/ used as given, the whole val/ scored.
    code = main(["train", "image-folder", "--data-dir", str(ANTS_BEES), "--max-steps", "3", "--image-size", "32",
                 "--run-dir", "ants", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["scored_split"] == "val" and summary["val_count"] == 153
