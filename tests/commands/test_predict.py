"""`torchlab predict`: whether each image was inverted is stated, true or false, in the text and the JSON."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from tests.conftest import TINY, write_dataset
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
