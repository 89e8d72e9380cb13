"""`torchlab predict`: whether each image was inverted is stated, true or false, in the text and the JSON;
`--explain` saves why the model chose its class, and refuses, in one line, what it cannot do."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import TINY, error_line, write_dataset
from torchlab.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("predict")
    data = write_dataset(tmp / "data")
    assert main(["train", "fashion-mnist", "--data-dir", str(data), *TINY, "--max-steps", "2", "--run-dir",
                 str(tmp / "run"), "--quiet"]) == 0
    return tmp / "run" / "best.pt"


def block(path, paper: int, ink: int) -> str:
    img = Image.new("L", (90, 60), paper)
    img.paste(ink, (30, 10, 60, 50))
    img.save(path)
    return str(path)


def test_inversion_is_stated_either_way(checkpoint, tmp_path, capsys):
    dark_on_white = block(tmp_path / "dark.png", 255, 0)
    light_on_black = block(tmp_path / "light.png", 0, 230)  # already the dataset's look
    assert main(["predict", str(checkpoint), dark_on_white, light_on_black]) == 0
    dark, light = capsys.readouterr().out.splitlines()
    assert "[inverted (background 1.00 is lighter than the item" in dark
    assert "[not inverted (background 0.00 is darker than the item" in light
    assert main(["predict", str(checkpoint), dark_on_white, light_on_black, "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["inverted"] for r in results] == [True, False]  # explicit, not left to be inferred
    assert [r["preprocessing"]["inverted"] for r in results] == [True, False]
    assert main(["predict", str(checkpoint), dark_on_white, "--invert", "no"]) == 0
    assert "[not inverted (--invert no)" in capsys.readouterr().out


def test_colour_models_say_they_never_invert():
    from torchlab.commands.predict import inversion_text, steps_text

    assert inversion_text({"resized_and_cropped": 96}) == "not inverted (colour model)"
    assert steps_text({"resized_and_cropped": 96}) == "  [not inverted (colour model)]"


def test_explain_saves_the_input_grad_cam_and_input_gradients(checkpoint, tmp_path, capsys, monkeypatch):
    from torchlab import explain

    drawn = []  # what the figure was made from, and its title

    def figure(result, real=explain.explanation_figure):
        fig = real(result)
        drawn.append((result, fig._suptitle.get_text(), [ax.get_title() for ax in fig.axes]))
        return fig

    monkeypatch.setattr(explain, "explanation_figure", figure)
    image, out = block(tmp_path / "dark.png", 255, 0), tmp_path / "why.png"
    assert main(["predict", str(checkpoint), image, "--explain", str(out)]) == 0
    printed, saved = capsys.readouterr().out.splitlines()
    assert saved == f"explanation saved to {out}"
    (result, title, panels), = drawn
    top = f"{result['class']} {result['prob']:.1%}"
    assert printed.startswith(f"{image}: {top}")  # the class explained is the one predict put first
    assert title == f"dark.png: {top}" and result["index"] == result["predicted"]["index"]
    assert panels[0::2] == ["input the model saw", "input × gradient"] and panels[1].startswith("Grad-CAM (conv2)")
    assert result["grad_cam"].shape == result["input_x_gradient"].shape == (28, 28)
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size == (960, 360)
        pixels = np.asarray(png.convert("RGB"), dtype=int)
    assert (pixels.max(2) - pixels.min(2) > 100).sum() > 500  # colour: the heat maps were drawn, not only grey


def test_explain_replaces_a_file_only_with_force(checkpoint, tmp_path, capsys):
    image, out = block(tmp_path / "dark.png", 255, 0), tmp_path / "why.png"
    out.write_bytes(b"mine")
    assert main(["predict", str(checkpoint), image, "--explain", str(out), "--quiet"]) == 2
    assert f"--explain {out}: already exists (pass --force" in error_line(capsys)
    assert out.read_bytes() == b"mine"
    assert main(["predict", str(checkpoint), image, "--explain", str(out), "--force"]) == 0
    with Image.open(out) as png:
        png.verify()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("case", ["no folder", "two images", "not png", "a folder"])
def test_explain_refuses_in_one_line_naming_the_flag(checkpoint, tmp_path, capsys, case):
    image = block(tmp_path / "dark.png", 255, 0)
    (tmp_path / "dir.png").mkdir()
    images, out, expected = {
        "no folder": ([image], tmp_path / "missing" / "why.png", "folder {} does not exist".format(tmp_path / "missing")),
        "two images": ([image, image], tmp_path / "why.png", "--explain explains one IMAGE, not 2"),
        "not png": ([image], tmp_path / "why.jpg", "must be a .png file"),
        "a folder": ([image], tmp_path / "dir.png", "is a folder"),
    }[case]
    assert main(["predict", str(checkpoint), *images, "--explain", str(out), "--quiet"]) == 2
    line = error_line(capsys)
    assert "--explain" in line and expected in line
    assert not (tmp_path / "why.png").exists() and not (tmp_path / "why.jpg").exists()


def test_explain_refuses_a_language_model(tmp_path, capsys):
    from tests.test_scoring import train_tiny_lm

    lm = train_tiny_lm(tmp_path)
    image = block(tmp_path / "dark.png", 255, 0)
    assert main(["predict", str(lm), image, "--explain", str(tmp_path / "why.png"), "--quiet"]) == 2
    assert f"--explain needs an image classifier, and {lm} holds a language model (lm-lstm)" in error_line(capsys)
    assert not (tmp_path / "why.png").exists()


def test_classifier_explain_takes_a_class_by_index_or_name(checkpoint, tmp_path):
    from torchlab import UserError, load

    model = load(checkpoint, device="cpu")
    image = block(tmp_path / "dark.png", 255, 0)
    by_name = model.explain(image, target="Sneaker")
    assert (by_name["class"], by_name["index"]) == ("Sneaker", 7) and by_name["input"].shape == (1, 28, 28)
    by_index = model.explain(Image.open(image), target=7)
    assert torch.allclose(by_index["input_x_gradient"], by_name["input_x_gradient"])
    assert by_index["prob"] == pytest.approx(by_name["prob"]) and 0 < by_name["prob"] < 1
    for bad in ("Spaceship", 10, True):
        with pytest.raises(UserError, match="not a class of this model"):
            model.explain(image, target=bad)
    with pytest.raises(UserError, match="explain takes one image, not 2"):
        model.explain([image, image])
