"""The gate heat map: its panels and colour bar, and column labels that never come out as tofu."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from matplotlib.font_manager import FontEntry
from PIL import Image

from torchlab.models import gate_plot
from torchlab.models.gate_plot import code_points, column_labels, default_font, font_covering, gate_figure, visible
from torchlab.models.gates import compute_gates
from torchlab.models.rnn import LanguageModel, LMConfig

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPT = "天上的云朵漂浮在"  # no Han glyph in matplotlib's own font


def gates_of(cell: str, layers: int, prompt: str = PROMPT):
    torch.manual_seed(0)
    model = LanguageModel(LMConfig(vocab_size=20, cell=cell, embed_size=6, hidden_size=12, layers=layers)).eval()
    return compute_gates(model, [1 + i % 19 for i in range(len(prompt))], list(prompt))


def png_of(fig) -> Image.Image:
    """The figure drawn as a PNG, with every warning an error: a missing glyph would raise here."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig.savefig(buffer, format="png")
    return Image.open(io.BytesIO(buffer.getvalue()))


@pytest.mark.parametrize("cell, layers, names", [("lstm", 2, ("forget", "input", "output")),
                                                 ("gru", 1, ("update", "reset"))])
def test_one_panel_per_layer_and_gate_with_a_colour_bar(cell, layers, names):
    fig = gate_figure(gates_of(cell, layers), k=5)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == [f"layer {k + 1}: {name} gate" for k in range(layers) for name in names]
    assert len(fig.axes) == len(panels) + 1  # and the colour bar
    for ax in panels:
        assert len(ax.get_yticks()) == 5 and len(ax.get_xticks()) == len(PROMPT)
        image = ax.get_images()[0]
        assert image.get_array().shape == (5, len(PROMPT)) and image.get_clim() == (0.0, 1.0)
    png = png_of(fig)
    assert png.format == "PNG" and png.width > 300 and png.height > 200


def test_rows_are_the_most_active_units():
    gates = gates_of("lstm", 1)
    ax = gate_figure(gates, k=4).axes[0]
    assert [int(t.get_text()) for t in ax.get_yticklabels()] == gates.most_active(0, 4)


def test_chinese_columns_are_drawn_in_a_font_that_has_them_or_as_code_points():
    labels, font = column_labels(list(PROMPT))
    if font is None:  # this machine has no CJK font
        assert labels[:2] == ["U+5929", "U+4E0A"]
    else:
        assert labels == list(PROMPT) and {ord(ch) for ch in PROMPT} <= code_points(font)
    png_of(gate_figure(gates_of("gru", 2)))  # no "Glyph missing" warning either way


def test_labels_the_default_font_has_stay_as_they_are():
    labels, font = column_labels(["T", "é", " ", "\n", "\x07"])
    assert labels == ["T", "é", "\u2423", "\u21b5", "U+0007"] and font == default_font()
    assert visible("a b") == "a\u2423b"


def test_font_covering_takes_the_first_font_with_every_glyph():
    plain = default_font()
    assert font_covering("abc", [plain]) == plain
    assert font_covering("天", [plain]) is None
    assert font_covering("天", ["/no/such/font.ttf", plain]) is None  # unreadable fonts are skipped


def test_cjk_fonts_are_tried_first_and_the_last_resort_font_never(monkeypatch):
    def entry(name, path, weight=400):
        return FontEntry(fname=path, name=name, style="normal", weight=weight)

    fonts = [entry("DejaVu Serif", "/f/serif.ttf"), entry("Last Resort High-Efficiency", "/f/lastresort.ttf"),
             entry("WenQuanYi Zen Hei", "/f/wqy.ttc"), entry("Noto Sans CJK SC", "/f/noto-bold.ttc", weight=700),
             entry("Noto Sans CJK SC", "/f/noto.ttc")]
    monkeypatch.setattr(gate_plot, "default_font", lambda: "/f/default.ttf")
    monkeypatch.setattr("matplotlib.font_manager.fontManager.ttflist", fonts)
    assert gate_plot.candidate_fonts() == ["/f/default.ttf", "/f/noto.ttc", "/f/noto-bold.ttc", "/f/wqy.ttc",
                                           "/f/serif.ttf"]


def test_a_plain_rnn_has_nothing_to_draw():
    with pytest.raises(ValueError, match="no gates"):
        gate_figure(gates_of("rnn", 1))
