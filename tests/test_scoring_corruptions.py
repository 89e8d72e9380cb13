"""scoring.corruption_table: `torchlab eval --corruptions` and benchmarks/robustness.py on a checkpoint trained on the
tiny dataset."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.conftest import TINY
from torchlab import checkpoint
from torchlab.cli import main
from torchlab.data.corrupt import CORRUPTIONS
from torchlab.errors import UserError
from torchlab import scoring

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def trained(tiny_data, tmp_path):
    """A notes-cnn trained for one epoch with photo-like changes (--photo), so that option runs end to end."""
    assert main(["train", "fashion-mnist", "--data-dir", str(tiny_data), *TINY, "--epochs", "1", "--photo", "1",
                 "--run-dir", str(tmp_path / "run"), "--quiet"]) == 0
    return tmp_path / "run" / "best.pt"


def test_eval_corruptions_table_and_json(trained, tiny_data, capsys):
    assert main(["eval", str(trained), "--corruptions", "--images", "20", "--data-dir", str(tiny_data)]) == 0
    out = capsys.readouterr().out
    assert "20 test images, seed 0" in out and "corruption accuracy" in out
    assert all(f"\n{name:<12}" in out for name in CORRUPTIONS)
    assert main(["eval", str(trained), "--corruptions", "--images", "20", "--data-dir", str(tiny_data), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert set(r["corruptions"]) == set(CORRUPTIONS) and all(len(v) == 3 for v in r["corruptions"].values())
    accs = [a for v in r["corruptions"].values() for a in v]
    assert r["corruption_acc"] == pytest.approx(sum(accs) / len(accs))
    assert r["gap"] == pytest.approx(r["clean_acc"] - r["corruption_acc"])
    assert all(a * 20 == pytest.approx(round(a * 20)) for a in accs + [r["clean_acc"]])  # counts out of 20
    assert 0 <= r["test_acc"] <= 1 and r["images"] == 20
    ckpt = checkpoint.load(str(trained))
    cache = {}
    again = scoring.corruption_table(ckpt, str(tiny_data), "cpu", 20, cache=cache)
    assert again["corruptions"] == r["corruptions"]  # seeded: the same images and the same answers
    inputs = cache["inputs"]
    assert set(inputs) == {("clean", 0)} | {(name, s) for name in CORRUPTIONS for s in (1, 2, 3)}
    assert all(x.shape == (20, 1, 28, 28) and 0 <= x.min() and x.max() <= 1 for x in inputs.values())
    cached = scoring.corruption_table(ckpt, str(tiny_data), "cpu", 20, cache=cache)
    assert cache["inputs"] is inputs and cached["corruptions"] == r["corruptions"]  # reused, not rebuilt
    other = scoring.corruption_table(ckpt, str(tiny_data), "cpu", 20, seed=1, cache=cache)
    assert cache["inputs"] is not inputs and other["seed"] == 1  # a new sample: made again


def test_sample_is_seeded_and_without_repeats():
    a, b, c = scoring.sample(50, 250, 0), scoring.sample(50, 250, 0), scoring.sample(50, 250, 1)
    assert a.tolist() == b.tolist() != c.tolist()
    assert len(set(a.tolist())) == 50 and a.tolist() == sorted(a.tolist())


def test_bad_image_count_and_colour_checkpoint():
    with pytest.raises(UserError, match="--images 0"):
        scoring.check_corruptions({"task": "fashion-mnist", "path": "x.pt"}, 0)
    with pytest.raises(UserError, match="grayscale image classifier"):
        scoring.check_corruptions({"task": "cifar10", "path": "x.pt"}, 10)
    with pytest.raises(UserError, match="grayscale image classifier"):
        scoring.check_corruptions({"task": "lm", "path": "x.pt"}, 10)


def test_eval_corruptions_bad_count_is_one_line(trained, tiny_data, capsys):
    code = main(["eval", str(trained), "--corruptions", "--images", "0", "--data-dir", str(tiny_data)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("torchlab: error: --images 0")


def test_benchmark_runs_on_a_tiny_checkpoint(trained, tiny_data, capsys):
    spec = importlib.util.spec_from_file_location("robustness_bench", ROOT / "benchmarks" / "robustness.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main([f"tiny={trained}", "--images", "10", "--data-dir", str(tiny_data)]) == 0
    out = capsys.readouterr().out
    assert "== tiny" in out and "corruption accuracy" in out
    row = [line for line in out.splitlines() if line.startswith("tiny ")][0]
    assert "1.00x" in row  # its own baseline, timed from its summary.json
