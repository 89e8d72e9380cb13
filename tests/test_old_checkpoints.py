"""Checkpoints written by an earlier torchlab (format 1, tests/fixtures/v1) still load and resume exactly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import write_dataset
from torchlab.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "v1"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


def fingerprint(path: Path) -> float:
    """One number that moves with every weight: the weights, flattened, times a repeating -3..3 ramp, summed."""
    state = torch.load(path, weights_only=True)["model_state"]
    x = torch.cat([v.double().flatten() for v in state.values() if v.is_floating_point()])
    return float((x * (torch.arange(len(x), dtype=torch.float64) % 7 - 3)).sum())


def resume(run: Path, *flags: str) -> dict:
    assert main(["train", "--resume", str(run), "--max-steps", "0", "--quiet", *flags]) == 0
    return json.loads((run / "summary.json").read_text())


def test_an_image_run_of_format_1_resumes_to_what_that_version_computed(tmp_path):
    run = shutil.copytree(FIXTURES / "image", tmp_path / "image")
    data = write_dataset(tmp_path / "data", n_train=300, n_test=100)
    summary = resume(run, "--data-dir", str(data))
    expected = EXPECTED["image"]
    assert (summary["status"], summary["steps"]) == ("finished", expected["steps"])
    assert summary["test_loss"] == pytest.approx(expected["test_loss"], rel=1e-4)
    assert fingerprint(run / "last.pt") == pytest.approx(expected["fingerprint"], rel=1e-4)


def test_a_language_model_run_of_format_1_resumes_to_what_that_version_computed(tmp_path):
    run = shutil.copytree(FIXTURES / "lm", tmp_path / "lm")
    shutil.copy(run / "corpus.txt", tmp_path / "corpus.txt")  # the run names it relative to the working folder
    summary = resume(run)
    expected = EXPECTED["lm"]
    assert (summary["status"], summary["steps"]) == ("finished", expected["steps"])
    assert summary["test_loss"] == pytest.approx(expected["test_loss"], rel=1e-4)
    assert fingerprint(run / "last.pt") == pytest.approx(expected["fingerprint"], rel=1e-4)
