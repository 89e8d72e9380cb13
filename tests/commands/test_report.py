"""`torchlab report`: one self-contained HTML page per run, checked by parsing it and in headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import shutil
from html.parser import HTMLParser

import pytest
from PIL import Image

from tests.browser import Browser, find_chromium
from tests.conftest import TINY, write_dataset
from tests.tasks.test_lm import english_text, train_args
from torchlab.cli import main

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (`make test` installs "
                                                              "Debian's chromium; or apt-get install chromium)")


class Page(HTMLParser):
    """The parts of a report the tests read: images, table rows (text and data-value), headings, links."""

    def __init__(self, text: str):
        super().__init__()
        self.images, self.rows, self.headings, self.external = [], [], [], []
        self.cell = self.heading = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag in ("script", "link") or (attrs.get("src") or "").startswith("http"):
            self.external.append(tag)
        if tag == "tr":
            self.rows.append([])
        if tag == "td":
            self.cell = ["", attrs.get("data-value")]
        if tag == "h2":
            self.heading = ""

    def handle_endtag(self, tag):
        if tag == "td":
            self.rows[-1].append(tuple(self.cell))
            self.cell = None
        if tag == "h2":
            self.headings.append(self.heading)
            self.heading = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell[0] += data
        if self.heading is not None:
            self.heading += data

    def value(self, name: str) -> float:
        """The exact number behind a metric row ("test acc" -> its data-value)."""
        row = next(r for r in self.rows if r and r[0][0] == name)
        return float(row[1][1])


def check_images(page: Page, count: int) -> None:
    assert len(page.images) == count
    for src in page.images:
        assert src.startswith("data:image/png;base64,")  # embedded: the page needs no network
        data = base64.b64decode(src.split(",", 1)[1])
        with Image.open(io.BytesIO(data)) as img:
            assert img.format == "PNG"
            img.verify()  # a whole, valid PNG


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    data = write_dataset(tmp / "data", n_train=600, n_test=250)
    run = tmp / "run"
    assert main(["train", "fashion-mnist", "--data-dir", str(data), *TINY, "--epochs", "2", "--lr", "1e-5",
                 "--run-dir", str(run)]) == 0
    return tmp


@pytest.fixture
def image_run_copy(image_run, tmp_path):
    return shutil.copytree(image_run / "run", tmp_path / "run"), image_run / "data"


def test_classifier_report_holds_the_runs_numbers_and_valid_images(image_run_copy, capsys):
    run, data = image_run_copy
    assert main(["report", str(run)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {run / 'report.html'}"
    page = Page((run / "report.html").read_text(encoding="utf-8"))
    summary = json.loads((run / "summary.json").read_text())
    assert page.value("test acc") == summary["test_acc"]
    assert page.value("best val acc") == summary["best_val_acc"]
    assert page.value("train seconds") == summary["train_seconds"]
    assert page.value("epochs") == 2
    per_class = {r[0][0]: float(r[1][1]) for r in page.rows if len(r) == 3 and r[1][1] is not None}
    assert per_class == pytest.approx(summary["per_class_acc"], abs=1e-12)
    epochs = [r for r in page.rows if len(r) > 3]
    assert [float(r[0][1]) for r in epochs] == [1, 2]
    assert [float(r[1][1]) for r in epochs] == [h["train_loss"] for h in summary["history"]]
    for heading in ("Command", "Final metrics", "Training curves", "Confusion matrix (test set)",
                    "Accuracy per class", "Most confidently wrong", "Configuration (config.toml)"):
        assert heading in page.headings
    text = (run / "report.html").read_text(encoding="utf-8")
    assert summary["command"] in text.replace("&#x27;", "'") and "Rescored here" in text
    assert "changed since" not in text  # rescoring gave the run's own accuracy
    wrong = round((1 - summary["test_acc"]) * 250)
    assert 0 < wrong and f"{wrong:,} of 250 images are wrong" in text  # a weak model, so there are mistakes
    check_images(page, 3)  # curves, confusion matrix, gallery of mistakes
    assert not page.external


def test_each_confident_mistake_has_its_grad_cam_overlay(image_run_copy, monkeypatch):
    import numpy as np

    from torchlab import html as html_module

    figures = []  # (title, image arrays) of every axes of every figure the page embeds

    def figure_uri(fig, real=html_module.figure_uri):
        figures.append([(ax.get_title(), [im.get_array() for im in ax.get_images()]) for ax in fig.axes])
        return real(fig)

    monkeypatch.setattr(html_module, "figure_uri", figure_uri)
    run, _ = image_run_copy
    assert main(["report", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    gallery = figures[-1]  # the last figure on the page: the gallery of mistakes
    titles = [title for title, _ in gallery if title]
    shown = min(24, round((1 - summary["test_acc"]) * 250))
    assert titles[0::2] == [t for t in titles if t.startswith("true ")] and len(titles[0::2]) == shown
    assert titles[1::2] == ["Grad-CAM"] * shown  # each mistake, then its overlay, side by side
    for title, images in gallery:
        if title == "Grad-CAM":
            (picture,) = images
            rgb = np.asarray(picture, dtype=int)
            assert rgb.shape == (28, 28, 3)  # the input's size
            assert (rgb.max(2) - rgb.min(2)).max() > 60  # coloured by the heat map, not a grey image
    page = Page((run / "report.html").read_text(encoding="utf-8"))
    with Image.open(io.BytesIO(base64.b64decode(page.images[-1].split(",", 1)[1]))) as png:
        pixels = np.asarray(png.convert("RGB"), dtype=int)
    assert (pixels.max(2) - pixels.min(2) > 60).sum() > 1000  # the embedded PNG holds the colour overlays


def test_report_without_the_data_still_shows_the_run(image_run_copy, capsys):
    run, data = image_run_copy
    shutil.rmtree(data.parent / "gone", ignore_errors=True)
    assert main(["report", str(run), "--data-dir", str(run / "no-such-data"), "--out", str(run / "r.html")]) == 0
    assert "warning: report without the test-set sections" in capsys.readouterr().err
    page = Page((run / "r.html").read_text(encoding="utf-8"))
    assert "Training curves" in page.headings and "Test set" in page.headings
    check_images(page, 1)


def test_report_refuses_to_overwrite_a_file_it_did_not_write(image_run_copy, capsys):
    run, _ = image_run_copy
    precious = run / "notes.html"
    precious.write_text("<p>my notes</p>")
    assert main(["report", str(run), "--out", str(precious)]) == 2
    assert "exists and is not a torchlab report" in capsys.readouterr().err
    assert precious.read_text() == "<p>my notes</p>"
    assert main(["report", str(run)]) == 0 and main(["report", str(run)]) == 0  # its own page is replaced


def test_report_on_a_run_that_failed_before_its_first_checkpoint(tmp_path, capsys):
    data = write_dataset(tmp_path / "data")
    assert main(["train", "fashion-mnist", "--data-dir", str(data), *TINY, "--run-dir", "r", "--optimizer", "sgd",
                 "--lr", "1e30", "--momentum", "0"]) == 2
    assert not (tmp_path / "r" / "last.pt").exists()
    assert main(["report", "r"]) == 0
    text = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    page = Page(text)
    assert "<b>failed</b>" in text and "loss became" in text and "checkpoint none" in text
    assert "Configuration (config.toml)" in page.headings and not page.images


def test_report_on_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


@pytest.mark.usefixtures("one_thread")
def test_language_model_report(tmp_path, capsys):
    corpus = tmp_path / "en.txt"
    corpus.write_text(english_text())
    assert main([*train_args(corpus, "--epochs", "2", "--run-dir", str(tmp_path / "lm"))]) == 0
    assert main(["report", str(tmp_path / "lm")]) == 0
    page = Page((tmp_path / "lm" / "report.html").read_text(encoding="utf-8"))
    summary = json.loads((tmp_path / "lm" / "summary.json").read_text())
    assert page.value("test ppl") == summary["test_ppl"] and page.value("best val ppl") == summary["best_val_ppl"]
    assert "Generated samples" in page.headings and "Training curves" in page.headings
    text = (tmp_path / "lm" / "report.html").read_text(encoding="utf-8")
    assert text.count('class="sample"') == 3
    check_images(page, 1)


@needs_chromium
@pytest.mark.isa_independent
def test_report_images_load_in_chromium(image_run_copy):
    run, _ = image_run_copy
    assert main(["report", str(run)]) == 0
    with Browser(CHROMIUM) as browser:
        browser.open((run / "report.html").resolve().as_uri())
        content = browser.content()
    assert len(content["images"]) == 3
    assert all(img["loaded"] and img["width"] > 100 for img in content["images"]), content["images"]
    assert "Most confidently wrong" in content["text"]


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("task", ["mnist", "cifar10", "image-folder"])
def test_report_for_every_image_task(tmp_path, capsys, task):
    from tests.conftest import write_cifar
    from tests.tasks.test_train_more import FOLDER, write_colour_folder

    if task == "image-folder":  # no test/ folder: the run and the report score val/
        data, flags = write_colour_folder(tmp_path / "colours"), [*FOLDER, "--lr", "1e-4"]
    elif task == "cifar10":
        data, flags = write_cifar(tmp_path / "cifar"), ["--device", "cpu", "--batch-size", "20", "--val-size", "20", "--lr", "1e-5"]
    else:
        data, flags = write_dataset(tmp_path / "mnist"), [*TINY, "--lr", "1e-5"]
    assert main(["train", task, "--data-dir", str(data), *flags, "--epochs", "1", "--run-dir", "r"]) == 0
    assert main(["report", "r"]) == 0
    text = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    page = Page(text)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    split = summary["scored_split"]
    assert split == ("val" if task == "image-folder" else "test")
    assert page.value(f"{split} acc") == summary[f"{split}_acc"]
    assert f"Confusion matrix ({split} set)" in page.headings and "changed since" not in text
    check_images(page, 3 if summary[f"{split}_acc"] < 1 else 2)


def test_open_uses_the_default_browser_when_there_is_one(image_run_copy, monkeypatch, capsys):
    import webbrowser

    run, _ = image_run_copy
    opened = []
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url) or True)
    assert main(["report", str(run), "--open"]) == 0
    assert opened == [(run / "report.html").resolve().as_uri()]
    monkeypatch.setattr(webbrowser, "open", lambda url: False)
    capsys.readouterr()
    assert main(["report", str(run), "--open"]) == 0
    assert "no browser found here; open" in capsys.readouterr().err


def test_a_short_max_steps_run_is_drawn_per_step_and_says_how_to_finish(tmp_path, capsys, monkeypatch):
    from torchlab import html as html_module

    drawn = []  # the x values of each line of the loss chart

    def figure_uri(fig, real=html_module.figure_uri):
        drawn.append([list(line.get_xdata()) for line in fig.axes[0].get_lines()])
        return real(fig)

    monkeypatch.setattr(html_module, "figure_uri", figure_uri)
    data = write_dataset(tmp_path / "data")
    assert main(["train", "fashion-mnist", "--data-dir", str(data), *TINY, "--max-steps", "7", "--run-dir", "dry",
                 "--quiet"]) == 0
    assert main(["report", "dry", "--data-dir", str(data)]) == 0
    text = (tmp_path / "dry" / "report.html").read_text(encoding="utf-8")
    assert drawn[0] == [[2, 4, 6], [7]]  # the logged training loss per step, and the one validation
    assert "<b>max-steps</b>" in text and "interrupted" not in text
    assert "Finish it (--max-steps 0 lifts the limit) with <code>torchlab train --resume dry --max-steps 0</code>" \
        in text
    page = Page(text)
    assert page.value("epochs") == 0.7 and page.value("best epoch") == 1  # 7 of 10 steps of epoch 1
    assert "0.7 (epoch 1 partial)" in text
