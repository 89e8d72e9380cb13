"""`torchlab demo`: what the page computes (views.py), the command's errors, and the real page in headless
Chromium: an upload, a bad upload, a prompt, the next-token table and the gates; SIGTERM stops the server."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.browser import Browser, find_chromium
from tests.commands.test_generate import LINES, shuffled
from tests.conftest import TINY, error_line, write_dataset
from torchlab import api
from torchlab.cli import main
from torchlab.errors import UserError

gradio = pytest.importorskip("gradio", reason="the demo extra is not installed: pip install 'torchlab[demo]'")
from torchlab.demo import views  # noqa: E402

CHROMIUM = find_chromium()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A tiny image classifier (with its data folder) and tiny LSTM and RNN language models, trained once."""
    root = tmp_path_factory.mktemp("demo")
    data = write_dataset(root / "data")
    assert main(["train", "fashion-mnist", "--data-dir", str(data), *TINY, "--epochs", "1",
                 "--run-dir", str(root / "image"), "--quiet"]) == 0
    (root / "zh.txt").write_text(shuffled(LINES, 80, seed=2), encoding="utf-8")
    for cell in ("lstm", "rnn"):
        assert main(["train", "lm", "--corpus", str(root / "zh.txt"), "--cell", cell, "--layers", "2", "--device",
                     "cpu", "--embed-size", "16", "--hidden-size", "32", "--bptt", "8", "--batch-size", "4",
                     "--eval-batch-size", "3", "--epochs", "1", "--precision", "fp32", "--threads", "1",
                     "--run-dir", str(root / cell), "--quiet"]) == 0
    photo = root / "shirt.png"
    Image.fromarray((torch.rand(60, 40) * 60 + 180).byte().numpy()).save(photo)  # a light, noisy photo
    return {"data": data, "image": root / "image" / "best.pt", "lstm": root / "lstm" / "best.pt",
            "rnn": root / "rnn" / "best.pt", "photo": photo, "root": root}


# --- what the page computes ----------------------------------------------------------------------------------


def test_an_image_is_seen_explained_and_opened_up_layer_by_layer(trained):
    clf = api.load(trained["image"], "cpu")
    pixels, note = views.from_photo(clf.checkpoint, Image.open(trained["photo"]))
    assert pixels.shape == (1, 28, 28) and "inverted" in note and "40×60 photo" in note
    look = views.look(clf, pixels, None, note)
    assert len(look.probs) == 5 and sum(look.probs.values()) <= 1 + 1e-6
    assert list(look.probs.values()) == sorted(look.probs.values(), reverse=True)
    assert look.seen.size == look.grad_cam.size == look.input_x_gradient.size == (224, 224)
    # notes-cnn: conv 5x5, conv 3x3, max-pool 2: each layer's channels, captioned with its arithmetic
    captions = [caption for _img, caption in look.layers]
    assert [c.split(":")[0] for c in captions] == ["conv1", "conv2", "max_pool"]
    assert "28×28 → conv 5×5 stride 1 pad 1 → 26×26" in captions[0] and "[32, 26, 26]" in captions[0]
    assert [c for _img, c in look.kernels] == ["conv1: [32, 1, 5, 5]", "conv2: [64, 32, 3, 3], the first 16 shown"]
    explained = views.look(clf, pixels, 3, note)  # another class: another map, the same prediction
    assert f"**{clf.classes[3]}**" in explained.note and explained.probs == look.probs


def test_test_images_to_pick_include_the_mistakes_with_their_true_class(trained):
    clf = api.load(trained["image"], "cpu")
    picks, note = views.test_picks(clf, str(trained["data"]))
    wrong = [p for p in picks if p["caption"].startswith("✗")]
    assert picks and "images are wrong" in note and len(picks) <= 2 * views.PICKS
    assert all(p["pixels"].shape == (1, 28, 28) and "true class" in p["note"] for p in picks)
    assert all(p["caption"].split(" → ")[0][2:] != p["caption"].split(" → ")[1].rsplit(" ", 1)[0] for p in wrong)
    none, why = views.test_picks(clf, str(trained["root"] / "nowhere"))
    assert none == [] and why.startswith("no test images to pick from")


def test_uploads_that_are_not_images_or_too_large_are_refused(trained, tmp_path, monkeypatch):
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    with pytest.raises(UserError, match="not an image Pillow can read"):
        views.open_upload(text)
    monkeypatch.setattr(views, "MAX_MEGAPIXELS", 0.002)  # 2,000 pixels: the 40x60 photo is too large
    with pytest.raises(UserError, match=r"shirt.png: 40×60 pixels is too large for the page \(at most 0.002"):
        views.open_upload(trained["photo"])


def test_a_drawing_is_dark_strokes_on_white_paper():
    canvas = Image.new("RGBA", (10, 10), (0, 0, 0, 0))  # transparent, as the sketchpad gives it
    canvas.putpixel((5, 5), (0, 0, 0, 255))
    paper = views.drawing(canvas)
    assert paper.mode == "RGB" and paper.getpixel((0, 0)) == (255, 255, 255) and paper.getpixel((5, 5)) == (0, 0, 0)


def test_next_tokens_continuation_and_gates(trained):
    tm = api.load(trained["lstm"], "cpu")
    rows = views.next_table(tm, "床前明", 10)
    assert len(rows) == 10 and 0 < sum(p for _t, p in rows) <= 1 + 1e-3
    assert [p for _t, p in rows] == sorted((p for _t, p in rows), reverse=True)
    assert views.continuation(tm, "床前明", 5, 0.8, 0, 1).startswith("床前明")
    picture, note = views.gates_picture(tm, "床前明月光")
    assert picture.width > 200 and note.startswith("LSTM")
    rnn = api.load(trained["rnn"], "cpu")
    assert views.gates_picture(rnn, "床前明月光") == (None, "a plain RNN has no gates: its hidden state is all "
                                                         "there is")


@pytest.mark.parametrize("prompt, words", [("", "--prompt is empty"), ("床前明@", "not in the model's vocabulary: '@'")])
def test_bad_prompts_are_refused(trained, prompt, words):
    tm = api.load(trained["lstm"], "cpu")
    with pytest.raises(UserError, match=words):
        views.next_table(tm, prompt, 5)


# --- the command ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, words", [
    (["demo", "nope.pt"], "nope.pt"),
    (["demo", "CKPT", "--port", "70000"], "--port 70000: not a port"),
])
def test_bad_command_lines_are_one_line_errors(trained, capsys, argv, words):
    argv = [str(trained["image"]) if a == "CKPT" else a for a in argv]
    assert main(argv) == 2
    assert words in error_line(capsys)


def test_without_gradio_the_error_says_what_to_install(monkeypatch, capsys, trained):
    monkeypatch.setitem(sys.modules, "torchlab.demo.page", None)  # as if gradio were missing: import fails
    assert main(["demo", str(trained["lstm"])]) == 2
    assert "pip install 'torchlab[demo]'" in error_line(capsys)


# --- the real page -------------------------------------------------------------------------------------------


def start(*ckpts, extra=()) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "torchlab", "demo", *map(str, ckpts), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("demo of "), proc.stderr.read() if proc.poll() is not None else line
    return proc, line.rsplit(" ", 1)[1].strip()


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30)
    finally:
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.isa_independent
def test_sigterm_closes_the_page(trained):
    proc, url = start(trained["lstm"])
    assert url.startswith("http://127.0.0.1:")
    assert urllib.request.urlopen(url, timeout=10).status == 200
    assert stop(proc) == 0  # a clean stop, not a death by signal
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=5)


def click_tab(browser: Browser, name: str) -> None:
    """Click the tab called `name` once the page has drawn it (Gradio draws a tab's content when it is shown)."""
    browser.wait_for(f"""(() => {{
        const tab = [...document.querySelectorAll('button[role=tab]')].find(t => t.textContent.trim() === {name!r});
        if (tab) tab.click();
        return !!tab; }})()""", 60)


def upload(browser: Browser, path: Path) -> None:
    """Choose a file in the upload box, as its file dialog would (a file shown already is cleared first)."""
    browser.evaluate("document.querySelector('#upload button[aria-label=Clear]')?.click()")
    browser.wait_for("document.querySelector('#upload input[type=file]') !== null", 20)
    root = browser.call("DOM.getDocument", depth=-1, pierce=True)["root"]["nodeId"]
    node = browser.call("DOM.querySelector", nodeId=root, selector="#upload input[type=file]")["nodeId"]
    browser.call("DOM.setFileInputFiles", files=[str(path)], nodeId=node)


def type_prompt(browser: Browser, text: str) -> None:
    """Set the prompt as typing would (Svelte listens for input events), then press the button."""
    browser.evaluate(f"""(() => {{
        const box = document.querySelector('#prompt textarea');
        Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype, 'value').set.call(box, {text!r});
        box.dispatchEvent(new Event('input', {{bubbles: true}}));
        document.querySelector('#look').click(); }})()""")


def loaded(content: dict, served: str) -> list[dict]:
    return [i for i in content["images"] if i["src"].startswith(served) and i["loaded"]]


@pytest.mark.isa_independent
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (`make test` installs Debian's chromium)")
def test_the_page_in_chromium(trained, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    proc, url = start(trained["image"], trained["lstm"], extra=["--data-dir", str(trained["data"])])
    try:
        with Browser(CHROMIUM) as browser:
            browser.open(url)
            browser.wait_for("document.querySelector('#classify-drawing') !== null", 60)
            browser.evaluate("document.querySelector('#classify-drawing').click()")  # nothing drawn yet
            assert "the canvas is empty" in browser.content_when(lambda c: "canvas is empty" in c["text"], 30)["text"]
            click_tab(browser, "upload")
            upload(browser, bad)  # refused on the page; the server goes on serving
            content = browser.content_when(lambda c: "not an image Pillow can read" in c["text"], 40)
            assert "notes.png: not an image Pillow can read" in content["text"]
            upload(browser, trained["photo"])
            content = browser.content_when(lambda c: "explaining" in c["text"] and len(loaded(c, url)) >= 6, 60)
            assert "explaining" in content["text"] and "inverted" in content["text"]
            assert "28×28 → conv 5×5 stride 1 pad 1 → 26×26" in content["text"]  # the feature maps' captions
            assert len(loaded(content, url)) >= 6  # seen, Grad-CAM, input × gradient, 3 layers (+ kernels)
            outside = browser.evaluate("performance.getEntriesByType('resource').map(e => e.name)"
                                       ".filter(n => !n.startsWith(location.origin))")
            assert outside == []  # no fonts, scripts or analytics from anywhere else
            click_tab(browser, "test images")  # a test image the model got wrong, with its true class
            browser.wait_for("document.querySelectorAll('#picks img').length > 0", 30)
            browser.evaluate("document.querySelectorAll('#picks img')[0].click()")
            content = browser.content_when(lambda c: "true class" in c["text"], 30)
            assert re.search(r"explaining .+? \(\d+\.\d%\); test image \d+, true class \S", content["text"])
            text_tab(browser, str(trained["lstm"].parent.name) + "/best.pt", url)
    finally:
        assert stop(proc) == 0


def text_tab(browser: Browser, tab: str, url: str) -> None:
    click_tab(browser, tab)
    browser.wait_for("document.querySelector('#prompt textarea') !== null", 20)
    type_prompt(browser, "床前明月光")
    content = browser.content_when(lambda c: "LSTM: each panel" in c["text"], 60)
    assert "LSTM: each panel is one gate" in content["text"] and "probability" in content["text"]
    gates = browser.wait_for("(() => { const i = document.querySelector('#gates img');"
                             " return i && i.complete && i.naturalWidth; })()", 30)  # the picture follows the text
    assert gates > 200
    type_prompt(browser, "床前明@")
    content = browser.content_when(lambda c: "not in the model's vocabulary" in c["text"], 30)
    assert "not in the model's vocabulary: '@'" in content["text"]
