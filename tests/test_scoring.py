"""scoring.predict_paths: `torchlab predict`'s classification of image files of every mode and format."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.conftest import error_line
from tests.data.test_image_files import BAD, CASES, bad_file, prepare, write_animated_gif, write_case
from torchlab.cli import main
from torchlab.data.images import open_image
from torchlab.errors import UserError
from torchlab.models.cnn import NotesCNN, NotesCNNConfig
from torchlab.scoring import predict_paths

pytestmark = pytest.mark.usefixtures("one_thread")


CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


CPU = torch.device("cpu")


def make_checkpoint(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    config = NotesCNNConfig()
    model = NotesCNN(config)
    return {
        "model_name": "notes-cnn",
        "model_config": dataclasses.asdict(config),
        "model_state": model.state_dict(),
        "classes": list(CLASSES),
        "mean": [0.286],
        "std": [0.353],
        "path": "x.pt",
    }


@pytest.fixture(scope="module")
def ckpt() -> dict:
    return make_checkpoint()


def expected_probs(ckpt: dict, path: Path, invert: str = "auto") -> torch.Tensor:
    model = NotesCNN(NotesCNNConfig())
    model.load_state_dict(ckpt["model_state"])
    x = (torch.from_numpy(prepare(Image.open(path), 28, invert))[None, None] - 0.286) / 0.353
    with torch.no_grad():
        return model.eval()(x).softmax(1)[0]


def check_result(result: dict, path: Path, k: int, ckpt: dict) -> None:
    assert result["image"] == str(path)
    top = result["top"]
    assert len(top) == k
    probs = [t["prob"] for t in top]
    assert probs == sorted(probs, reverse=True)
    assert all(0 <= p <= 1 for p in probs)
    assert sum(probs) <= 1 + 1e-5
    assert all(t["class"] == ckpt["classes"][t["index"]] for t in top)
    assert len({t["index"] for t in top}) == k
    expected = expected_probs(ckpt, path)
    values, indices = expected.topk(k)
    assert [t["index"] for t in top] == indices.tolist()
    assert probs == pytest.approx(values.tolist(), abs=1e-5)


def test_checkpoint_model_differs_from_fresh_seed(ckpt):
    other = make_checkpoint(seed=1)
    assert not torch.equal(ckpt["model_state"]["fc1.weight"], other["model_state"]["fc1.weight"])


@pytest.mark.parametrize("top_k", [1, 3, 10])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_predict_every_mode_and_format(tmp_path, ckpt, case, top_k):
    path = write_case(tmp_path, case)
    results = predict_paths(ckpt, [str(path)], CPU, top_k)
    assert len(results) == 1
    check_result(results[0], path, top_k, ckpt)


def test_animated_gif_uses_first_frame(tmp_path, ckpt):
    path = write_animated_gif(tmp_path)
    with Image.open(path) as img:
        assert img.format == "GIF" and getattr(img, "n_frames", 1) == 2
    out = prepare(open_image(path), 28, "auto")
    assert out[0].mean() < 0.1 and out[13:15, 13:15].mean() > 0.7
    results = predict_paths(ckpt, [str(path)], CPU, 3)
    check_result(results[0], path, 3, ckpt)


def test_predict_batch_of_all_formats_keeps_order(tmp_path, ckpt):
    paths = [write_case(tmp_path, case) for case in CASES] + [write_animated_gif(tmp_path)]
    results = predict_paths(ckpt, [str(p) for p in paths], CPU, 2)
    assert [r["image"] for r in results] == [str(p) for p in paths]
    for result, path in zip(results, paths):
        check_result(result, path, 2, ckpt)


@pytest.mark.parametrize("top_k", [11, 50])
def test_top_k_is_capped_at_class_count(tmp_path, ckpt, top_k):
    path = write_case(tmp_path, CASES[0])
    (result,) = predict_paths(ckpt, [str(path)], CPU, top_k)
    assert len(result["top"]) == len(CLASSES)
    assert sorted(t["index"] for t in result["top"]) == list(range(10))
    assert {t["class"] for t in result["top"]} == set(CLASSES)
    assert sum(t["prob"] for t in result["top"]) == pytest.approx(1.0, abs=1e-5)


def test_class_names_come_from_checkpoint(tmp_path):
    ckpt = make_checkpoint()
    ckpt["classes"] = [f"class-{i}" for i in range(10)]
    path = write_case(tmp_path, CASES[0])
    (result,) = predict_paths(ckpt, [str(path)], CPU, 10)
    assert all(t["class"] == f"class-{t['index']}" for t in result["top"])


def test_normalisation_comes_from_checkpoint(tmp_path):
    path = write_case(tmp_path, CASES[0])
    a = make_checkpoint()
    b = make_checkpoint()
    b["mean"], b["std"] = [0.9], [0.1]
    (ra,) = predict_paths(a, [str(path)], CPU, 10)
    (rb,) = predict_paths(b, [str(path)], CPU, 10)
    assert [t["prob"] for t in ra["top"]] != pytest.approx([t["prob"] for t in rb["top"]], abs=1e-4)


@pytest.mark.parametrize("kind", BAD)
@pytest.mark.parametrize("position", [0, 1, 2])
def test_batch_with_one_bad_file_predicts_nothing(tmp_path, ckpt, monkeypatch, kind, position):
    calls = []
    original_forward = NotesCNN.forward

    def counting_forward(self, x):
        calls.append(x.shape)
        return original_forward(self, x)

    monkeypatch.setattr(NotesCNN, "forward", counting_forward)
    good = [write_case(tmp_path, CASES[0]), write_case(tmp_path, CASES[3])]
    bad = bad_file(tmp_path, kind)
    paths = [str(p) for p in good]
    paths.insert(position, str(bad))
    with pytest.raises(UserError) as info:
        predict_paths(ckpt, paths, CPU, 3)
    assert str(bad) in info.value.message
    assert calls == []
    results = predict_paths(ckpt, [str(p) for p in good], CPU, 3)
    assert len(results) == 2 and len(calls) == 1


def train_tiny_lm(tmp_path: Path) -> Path:
    """best.pt of a language model trained for 3 steps on a short English text."""
    corpus = tmp_path / "en.txt"
    corpus.write_text("The time traveller spoke, and we listened to him. " * 20)
    assert main(["train", "lm", "--corpus", str(corpus), "--embed-size", "8", "--hidden-size", "16", "--layers", "1",
                 "--bptt", "8", "--batch-size", "4", "--epochs", "1", "--max-steps", "3", "--device", "cpu",
                 "--precision", "fp32", "--threads", "1", "--run-dir", str(tmp_path / "lm"), "--quiet"]) == 0
    return tmp_path / "lm" / "best.pt"


def test_a_language_model_checkpoint_is_refused_by_image_commands(tmp_path, capsys):
    lm_ckpt = str(train_tiny_lm(tmp_path))
    write_case(tmp_path, CASES[0]).rename(tmp_path / "img.png")
    capsys.readouterr()
    for args, command in ((["predict", lm_ckpt, "img.png"], "predict"), (["eval", lm_ckpt], "eval"),
                          (["conv-viz", "--images", str(tmp_path), "--checkpoint", lm_ckpt], "conv-viz --checkpoint")):
        assert main([*args, "--quiet"]) == 2
        line = error_line(capsys)
        assert f"{lm_ckpt}: checkpoint is for task 'lm': a language model (lm-lstm), and `torchlab {command}` needs " \
               "an image classifier" in line
        assert f"torchlab generate {lm_ckpt} --prompt TEXT" in line
