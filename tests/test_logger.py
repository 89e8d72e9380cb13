"""Progress bars: shown on a terminal, silent in CI logs and with --quiet."""

from __future__ import annotations

import io
import sys

from tests.conftest import TINY
from torchlab import logger
from torchlab.cli import main


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_draw_on_a_terminal(monkeypatch):
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    monkeypatch.setattr(logger, "QUIET", False)  # whatever an earlier `main([... "--quiet"])` left
    assert list(logger.tracked(range(5), "evaluating")) == [0, 1, 2, 3, 4]
    assert "evaluating" in term.getvalue() and "0/5" in term.getvalue()  # drawn, then cleared (leave=False)


def test_quiet_silences_bars_even_on_a_terminal(monkeypatch):
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    monkeypatch.setattr(logger, "QUIET", True)
    assert list(logger.tracked([1, 2], "evaluating")) == [1, 2]
    logger.say("hello")
    assert term.getvalue() == ""


def test_training_log_has_no_bars_when_not_a_terminal(tiny_data, capsys):
    assert main(["train", "fashion-mnist", "--data-dir", str(tiny_data), *TINY, "--epochs", "1", "--run-dir", "r"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "evaluating" not in err  # CI logs keep only whole lines
    assert "epoch 1/1" in err


def test_quiet_training_prints_only_results(tiny_data, capsys):
    assert main(["train", "fashion-mnist", "--data-dir", str(tiny_data), *TINY, "--epochs", "1", "--run-dir", "r",
                 "--quiet"]) == 0
    out = capsys.readouterr()
    assert out.err == "" and "test accuracy" in out.out
