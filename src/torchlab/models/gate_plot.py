"""A heat map of a language model's gates over a prompt, and a font that can write the prompt.

One panel per layer and gate: rows are the layer's most active hidden units, columns the prompt's tokens,
colour the gate's value from 0 (closed) to 1 (open). The figure is a plain matplotlib Figure, made without
pyplot, so a web page can show it and a command can save it, from any thread, without a display.

Prompts are often Chinese, and matplotlib's own font (DejaVu Sans) has no Han characters. So the column
labels are written in the first installed font that has a glyph for every one of them (the default font
first, then the usual CJK fonts, then any other); where no font has them all, a character the default font
lacks is written as its code point ("U+5929"), never as an empty box with a "Glyph missing" warning.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Optional, Sequence

from torchlab.models.gates import Gates

# Fonts with Han characters, in the order they are tried before any other font: the ones Linux, macOS and
# Windows usually bring, Simplified Chinese faces first (Tang poems are read in them here).
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "Source Han Sans CN", "WenQuanYi Zen Hei",
             "WenQuanYi Micro Hei", "Noto Sans CJK JP", "Noto Sans CJK TC", "Source Han Sans", "SimHei",
             "Microsoft YaHei", "PingFang SC", "Hiragino Sans GB", "Heiti SC", "STHeiti", "Arial Unicode MS")

# matplotlib's "Last Resort" font claims every code point, but draws each as a box: tofu under another name.
NOT_REAL_GLYPHS = ("Last Resort",)

# Characters that would be invisible as a column label, and what stands for them.
SHOWN_AS = {" ": "\u2423", "\n": "\u21b5", "\t": "\u2192"}  # open box, return arrow, right arrow

DEFAULT_UNITS = 16  # rows per panel: the layer's most active hidden units


def code_point(ch: str) -> str:
    return f"U+{ord(ch):04X}"


@lru_cache(maxsize=None)
def code_points(path: str) -> frozenset[int]:
    """The characters the font file at `path` has glyphs for (its first face); empty when it cannot be read."""
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):
        return frozenset()


def default_font() -> str:
    """The file of the font matplotlib writes text in when none is named."""
    from matplotlib.font_manager import FontProperties, findfont

    return findfont(FontProperties())


def candidate_fonts() -> list[str]:
    """Font files to try, in order: the default font, the known CJK fonts, then every other installed font."""
    from matplotlib.font_manager import fontManager

    def rank(entry) -> tuple:
        known = CJK_FONTS.index(entry.name) if entry.name in CJK_FONTS else len(CJK_FONTS)
        return known, entry.style != "normal", entry.weight not in (400, "normal", "regular"), entry.fname

    fonts = sorted((f for f in fontManager.ttflist if not f.name.startswith(NOT_REAL_GLYPHS)), key=rank)
    return [default_font(), *(f.fname for f in fonts)]


def font_covering(text: str, fonts: Optional[Sequence[str]] = None) -> Optional[str]:
    """The first font file (of `fonts`, default `candidate_fonts()`) with a glyph for every character of
    `text`; None when there is none."""
    needed = {ord(ch) for ch in text}
    return next((path for path in (fonts if fonts is not None else candidate_fonts())
                 if needed <= code_points(path)), None)


def visible(token: str) -> str:
    """The token as a label: spaces and line breaks drawn as signs, other control characters as code points."""
    return "".join(SHOWN_AS.get(ch) or (ch if ch.isprintable() else code_point(ch)) for ch in token)


def column_labels(tokens: Sequence[str]) -> tuple[list[str], Optional[str]]:
    """(labels, font file) for the columns: the tokens in a font that has them all, or, when no installed font
    does, in the default font with every character it lacks written as its code point (font file None)."""
    labels = [visible(t) for t in tokens]
    font = font_covering("".join(labels))
    if font is not None:
        return labels, font
    known = code_points(default_font())
    return ["".join(ch if ord(ch) in known else code_point(ch) for ch in label) for label in labels], None


def gate_figure(gates: Gates, k: int = DEFAULT_UNITS):
    """A matplotlib Figure: for each layer (a row of panels) and sigmoid gate (a column of panels), the gate's
    value at the layer's k most active units (rows) for each prompt token (columns), with one colour bar.

    A plain RNN has no gates: ValueError (check `gates.has_gates` first)."""
    from matplotlib.figure import Figure
    from matplotlib.font_manager import FontProperties

    if not gates.has_gates:
        raise ValueError("a plain RNN has no gates to draw")
    labels, font = column_labels(gates.tokens)
    label_font = FontProperties(fname=font, size=9) if font else FontProperties(size=9)
    units = [gates.most_active(layer, k) for layer in range(len(gates.layers))]
    names, steps, rows = gates.gate_names, len(labels), max(len(u) for u in units)
    fig = Figure(figsize=(1.0 + len(names) * (1.0 + 0.3 * steps), 0.8 + len(units) * (1.2 + 0.17 * rows)),
                 dpi=100, layout="constrained")
    axes = fig.subplots(len(units), len(names), squeeze=False)
    for layer, (row, picked) in enumerate(zip(axes, units)):
        for ax, name in zip(row, names):
            values = gates.layers[layer].gates[name][:, picked].T  # [k, T]: units down, tokens across
            image = draw_panel(ax, values.numpy(), picked, labels, label_font)
            ax.set_title(f"layer {layer + 1}: {name} gate", fontsize=10)
    for ax in axes[:, 0]:
        ax.set_ylabel("unit (most active first)", fontsize=8)
    fig.colorbar(image, ax=axes, label="gate value: 0 closed, 1 open", shrink=0.9)
    fig.suptitle(f"{gates.cell.upper()} gates over the prompt", fontsize=11)
    return fig


def draw_panel(ax, values, units: Sequence[int], labels: Sequence[str], label_font):
    """One gate's heat map on `ax`: values [k, T] in [0, 1], a row per unit, a column per token."""
    image = ax.imshow(values, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    turn = 90 if any(len(label) > 2 for label in labels) else 0  # words and code points would overlap
    ax.set_xticks(range(len(labels)), labels, fontproperties=label_font, rotation=turn)
    ax.set_yticks(range(len(units)), [str(u) for u in units], fontsize=7)
    return image
