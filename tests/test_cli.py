"""Every command through `main(argv)`, and the error paths: one line, exit 2, no traceback."""

import json

import numpy as np
import pytest
from PIL import Image

from tests.conftest import TINY, write_dataset
from torchlab.cli import main


@pytest.fixture
def trained(tiny_data, tmp_path):
    assert main(["train", "fashion-mnist", "--data-dir", str(tiny_data), *TINY, "--epochs", "2",
                 "--lr", "3e-3", "--run-dir", "run"]) == 0
    return tmp_path / "run"


def one_line_error(capsys, code, *fragments):
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err and err[-1].startswith("torchlab: error: "), err
    assert "Traceback" not in "\n".join(err)
    for fragment in fragments:
        assert fragment in err[-1]


def test_help_and_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and "torchlab" in capsys.readouterr().out
    for command in ["train", "eval", "predict", "models", "data"]:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        assert "example:" in out and f"torchlab {command}" in out


def test_models_table(capsys):
    assert main(["models"]) == 0
    assert "127,498" in capsys.readouterr().out
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["notes-cnn"]["params"] == 127498 and rows["notes-cnn"]["macs"] == 13108992
    assert rows["vgg-small"]["macs"] > rows["notes-cnn"]["macs"]


def test_data_command(tiny_data, capsys):
    assert main(["data", "fashion-mnist", "--data-dir", str(tiny_data), "--offline"]) == 0
    assert "600 train + 250 test" in capsys.readouterr().out


def test_eval_prints_accuracy_per_class_and_matrix(trained, tiny_data, tmp_path, capsys):
    summary = json.loads((trained / "summary.json").read_text())
    capsys.readouterr()
    assert main(["eval", str(trained / "best.pt"), "--data-dir", str(tiny_data)]) == 0
    out = capsys.readouterr().out
    assert f"{summary['test_acc']:.2%}" in out and "Ankle boot" in out and "confusion matrix" in out
    assert (trained / "best-confusion.png").exists()
    assert main(["eval", str(trained), "--data-dir", str(tiny_data), "--json", "--out", "cm.png"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["count"] == 250 and result["test_acc"] == pytest.approx(summary["test_acc"])
    assert sum(map(sum, result["confusion"])) == 250
    assert Image.open(tmp_path / "cm.png").format == "PNG"


def test_predict(trained, tmp_path, capsys):
    img = Image.new("L", (90, 60), 255)  # a dark block on white: gets inverted
    img.paste(0, (30, 10, 60, 50))
    img.save(tmp_path / "item.png")
    assert main(["predict", str(trained / "best.pt"), "item.png", "--top-k", "2"]) == 0
    assert capsys.readouterr().out.startswith("item.png: ")
    assert main(["predict", str(trained / "best.pt"), "item.png", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result[0]["top"]) == 3 and result[0]["top"][0]["prob"] >= result[0]["top"][1]["prob"]
    steps = result[0]["preprocessing"]
    assert steps["inverted"] and steps["levels"]["applied"] and steps["frame"]["item_box"] == [30, 10, 60, 50]


def test_predict_show_saves_what_the_model_saw(trained, tmp_path, capsys):
    img = Image.new("RGB", (120, 80), (230, 220, 200))  # a dark block on tinted paper
    img.paste((40, 40, 40), (40, 10, 70, 70))
    img.save(tmp_path / "item.png")
    img.save(tmp_path / "copy.png")
    assert main(["predict", str(trained / "best.pt"), "item.png", "--show", "seen/one.png"]) == 0
    out = capsys.readouterr().out
    assert "inverted" in out and "seen/one.png" in out
    seen = Image.open(tmp_path / "seen" / "one.png")
    assert seen.size == (28, 28) and seen.mode == "L"
    pixels = np.asarray(seen).ravel().tolist()
    assert max(pixels) == 255 and pixels[0] == 0  # light item, black background: the dataset's look
    assert main(["predict", str(trained / "best.pt"), "item.png", "copy.png", "--show", "two.png",
                 "--no-levels", "--no-denoise", "--no-frame"]) == 0
    two = Image.open(tmp_path / "two.png")
    assert two.size == (56, 28) and two.getpixel((0, 0)) > 0  # side by side; the paper left as it was
    code = main(["predict", str(trained / "best.pt"), "item.png", "--show", str(tmp_path / "item.png" / "x.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("torchlab: error: --show")


@pytest.mark.parametrize("argv, fragments", [
    (["train", "fashion-mnist", "--bogus"], ["unrecognized arguments: --bogus"]),
    (["train", "fashion-mnist", "--optimizer", "rmsprop"], ["invalid choice: 'rmsprop'"]),
    (["train", "fashion-mnist", "--epochs", "many"], ["invalid int value"]),
    (["train", "fashion-mnist", "--epochs", "0"], ["epochs must be at least 1"]),
    (["train", "cifar100"], ["invalid choice: 'cifar100'"]),
    (["train"], ["name a task"]),
    (["train", "fashion-mnist", "--model", "resnet900"], ["unknown model 'resnet900'"]),
    (["frobnicate"], ["invalid choice: 'frobnicate'"]),
    (["train", "fashion-mnist", "--config", "missing.toml"], ["missing.toml"]),
])
def test_bad_flags(argv, fragments, tiny_data, capsys):
    one_line_error(capsys, main(argv + ["--data-dir", str(tiny_data)]), *fragments)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_unavailable_device(tiny_data, capsys):
    code = main(["train", "fashion-mnist", "--device", "cuda", "--data-dir", str(tiny_data)])
    one_line_error(capsys, code, "--device cuda: not available")


def test_missing_dataset_lists_every_place_tried(tmp_path, capsys):
    code = main(["train", "fashion-mnist", "--data-dir", str(tmp_path / "nowhere")])
    one_line_error(capsys, code, "dataset fashion-mnist not found", "nowhere", "user cache", "--data-dir")


def test_corrupt_dataset_names_the_file(tmp_path, capsys):
    folder = write_dataset(tmp_path / "bad", gz=False)
    path = folder / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    one_line_error(capsys, main(["train", "fashion-mnist", "--data-dir", str(folder)]), str(path), "truncated")


def test_existing_run_dir_is_never_overwritten(trained, tiny_data, capsys):
    before = (trained / "last.pt").read_bytes()
    code = main(["train", "fashion-mnist", "--data-dir", str(tiny_data), *TINY, "--run-dir", str(trained)])
    one_line_error(capsys, code, "already holds files", "--resume")
    assert (trained / "last.pt").read_bytes() == before


def test_non_image_and_bad_checkpoint(trained, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not an image")
    one_line_error(capsys, main(["predict", str(trained / "best.pt"), "notes.txt"]), "notes.txt", "not an image")
    one_line_error(capsys, main(["predict", str(trained / "best.pt"), "gone.png"]), "gone.png")
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 100)
    one_line_error(capsys, main(["eval", "junk.pt"]), "junk.pt")
    one_line_error(capsys, main(["predict", "junk.pt", "notes.txt"]), "junk.pt")


def test_checkpoint_of_another_architecture(trained, tmp_path, capsys):
    import torch

    ckpt = torch.load(trained / "best.pt", weights_only=True)
    ckpt["model_name"] = "vgg-small"  # weights of notes-cnn labelled as another network
    torch.save(ckpt, tmp_path / "mixed.pt")
    Image.new("L", (28, 28)).save(tmp_path / "a.png")
    one_line_error(capsys, main(["predict", "mixed.pt", "a.png"]), "mixed.pt", "do not fit model 'vgg-small'")
    ckpt["task"] = "cifar10"
    torch.save(ckpt, tmp_path / "other.pt")
    one_line_error(capsys, main(["eval", "other.pt"]), "other.pt", "1-channel", "cifar10")


def test_debug_shows_the_traceback(tmp_path, capsys):
    assert main(["--debug", "eval", "missing.pt"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_a_run_dir_that_is_a_file_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    code = main(["train", "fashion-mnist", "--run-dir", str(tmp_path / "notes.txt"), "--data-dir", str(tmp_path / "none")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0] == f"torchlab: error: --run-dir {tmp_path / 'notes.txt'}: is a file, not a folder (choose another --run-dir)"
    assert (tmp_path / "notes.txt").read_text() == "keep me"
