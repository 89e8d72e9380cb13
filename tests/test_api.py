"""torchlab's Python API: train, load, predict and generate, evaluate; the CLI prints what it returns."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

import torchlab
from conftest import synthetic_split
from torchlab.cli import main
from torchlab.data.photo import PhotoOptions

TINY = dict(device=torch.device("cpu"), val_size=100, batch_size=50, eval_batch_size=64, log_every=2,
            precision="fp32", threads=1, quiet=True)


@pytest.fixture
def run(tiny_data, tmp_path):
    return torchlab.train("fashion-mnist", data_dir=str(tiny_data), run_dir=str(tmp_path / "mine"), epochs=2,
                          optimizer="sgd", lr=0.05, **TINY)


def test_train_honours_run_dir_and_returns_the_run(run, tmp_path):
    assert run.run_dir == tmp_path / "mine" and (run.run_dir / "best.pt").exists()
    assert run.config.epochs == 2 and run.config.device == "cpu"  # a torch.device is stored as its kind
    assert [h["epoch"] for h in run.history] == [1, 2]
    assert set(run.best) == {"val_acc", "epoch"} and run.test["test_acc"] > 0.5
    assert run.summary["status"] == "finished" and isinstance(run.model, torch.nn.Module)


def test_load_predicts_paths_pil_images_and_tensors_alike(run, tmp_path):
    model = torchlab.load(run.run_dir, device=torch.device("cpu"))
    assert isinstance(model, torchlab.Classifier) and len(model.classes) == 10
    images, labels = synthetic_split(4, seed=2)  # [4, 28, 28] uint8, as the test split
    pil = [Image.fromarray(image.numpy()) for image in images]
    pil[0].save(tmp_path / "first.png")
    by_pil = model.predict(pil, top_k=2)
    by_tensor = model.predict(images[:, None].float() / 255, top_k=2)  # one [N, C, H, W] batch
    by_path = model.predict(tmp_path / "first.png", top_k=2)
    assert [r["top"] for r in by_pil] == [r["top"] for r in by_tensor]  # the same batch: the same numbers
    alone, first = by_path[0]["top"], by_pil[0]["top"]  # a batch of one: equal up to rounding
    assert [t["index"] for t in alone] == [t["index"] for t in first] and by_path[0]["image"].endswith("first.png")
    assert [t["prob"] for t in alone] == pytest.approx([t["prob"] for t in first], rel=1e-4, abs=1e-9)
    assert len(by_pil[0]["top"]) == 2 and by_pil[0]["top"][0]["prob"] >= by_pil[0]["top"][1]["prob"]
    # The synthetic classes are told apart by where their block sits, which framing a photo would undo.
    as_is = PhotoOptions(invert="no", levels=False, denoise=False, frame=False)
    right = sum(r["top"][0]["index"] == int(y) for r, y in zip(model.predict(pil, options=as_is), labels))
    assert right >= 3


def test_bad_images_and_settings_are_one_line_errors(run):
    model = torchlab.load(run.run_dir)
    with pytest.raises(torchlab.UserError, match=r"images\[0\]: a tensor of shape \(2, 28, 28\)"):
        model.predict(torch.zeros(2, 28, 28))
    with pytest.raises(torchlab.UserError, match=r"images\[0\]: float values must lie in \[0, 1\]"):
        model.predict(torch.full((1, 28, 28), 3.0))
    with pytest.raises(torchlab.UserError, match="top_k 0"):
        model.predict(torch.zeros(1, 28, 28), top_k=0)
    with pytest.raises(torchlab.UserError, match="lr must be a finite number, got nan"):
        torchlab.train("fashion-mnist", lr=float("nan"))


def test_evaluate_returns_what_eval_json_prints(run, tiny_data, capsys):
    metrics = torchlab.evaluate(run.run_dir, data_dir=str(tiny_data), device="cpu")
    assert metrics["test_acc"] == pytest.approx(run.test["test_acc"])
    assert len(metrics["confusion"]) == 10 and sum(map(sum, metrics["confusion"])) == metrics["count"] == 250
    capsys.readouterr()
    assert main(["eval", str(run.run_dir), "--data-dir", str(tiny_data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == metrics
    assert torchlab.evaluate(torchlab.load(run.run_dir), data_dir=str(tiny_data))["test_acc"] == metrics["test_acc"]


def test_a_language_model_generates_and_lists_next_tokens(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat. " * 60)
    run = torchlab.train("lm", corpus=str(corpus), embed_size=8, hidden_size=16, layers=1, bptt=8, batch_size=4,
                         epochs=1, max_steps=20, run_dir=str(tmp_path / "lm"), device="cpu", precision="fp32",
                         threads=1, quiet=True)
    assert run.summary["status"] == "max-steps" and "val_ppl" in run.best
    model = torchlab.load(run.run_dir, device=torch.device("cpu"))
    assert isinstance(model, torchlab.TextModel)
    text = model.generate("the c", tokens=10, seed=1)
    assert text["text"].startswith("the c") and len(text["new_tokens"]) == 10
    assert model.generate("the c", tokens=10, seed=1) == text  # seeded
    top = model.next_tokens("the ca", k=3)["next"]
    assert len(top) == 3 and top[0]["prob"] >= top[1]["prob"] >= top[2]["prob"]
    with pytest.raises(torchlab.UserError, match="--next 0: must be at least 1"):
        model.next_tokens("the", k=0)
