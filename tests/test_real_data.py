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
    assert summary["test_count"] == 10000  # the whole test set is scored
    assert summary["test_acc"] > 0.6  # 40 steps of Adam already learn a lot; chance is 0.1
    assert main(["eval", "real/best.pt", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test_acc"] == pytest.approx(summary["test_acc"])
