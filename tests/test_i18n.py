"""torchlab in Chinese: the catalogs are complete and compiled, and the language follows --lang and the locale.

The catalog checks re-extract the marked messages (`_()` and `N_()`) from src/ with Babel, as `pybabel extract`
does (see babel.cfg), so a new message without a Chinese translation fails here.
"""

from __future__ import annotations

import gettext
import re
import string
from pathlib import Path

import numpy as np
import pytest

from torchlab import i18n
from torchlab.cli import main

babel_extract = pytest.importorskip("babel.messages.extract")
from babel.messages.pofile import read_po  # noqa: E402

SRC = Path(i18n.__file__).parent
PO = i18n.LOCALE_DIR / "zh" / "LC_MESSAGES" / f"{i18n.DOMAIN}.po"
MO = PO.with_suffix(".mo")
POT = i18n.LOCALE_DIR / f"{i18n.DOMAIN}.pot"
CJK = re.compile(r"[\u4e00-\u9fff]")
LOCALE_VARIABLES = ("TORCHLAB_LANG", "LC_ALL", "LC_MESSAGES", "LANG")


@pytest.fixture(autouse=True)
def no_locale(monkeypatch):
    """Each test starts from an environment that asks for no language (English), and leaves English behind."""
    for name in LOCALE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    yield
    i18n.use("en")


def marked_messages() -> set[str]:
    """Every message marked in src/torchlab, as `pybabel extract -F babel.cfg -k _ -k N_` finds them."""
    found = babel_extract.extract_from_dir(str(SRC), method_map=[("**.py", "python")],
                                           keywords={"_": None, "N_": None})
    return {message for _file, _line, message, _comments, _context in found if message}


def catalog(path: Path) -> dict[str, str]:
    with open(path, "rb") as fh:
        return {m.id: m.string for m in read_po(fh) if m.id}


def fields(message: str) -> list[str]:
    """The named placeholders of a str.format message, in order of appearance, sorted."""
    return sorted(name for _text, name, _spec, _conv in string.Formatter().parse(message) if name is not None)


def test_every_marked_message_has_a_chinese_translation():
    zh = catalog(PO)
    missing = sorted(marked_messages() - set(zh))
    assert not missing, f"not in {PO.name} (run the commands in babel.cfg, then translate): {missing}"
    empty = sorted(m for m, s in zh.items() if not s.strip())
    assert not empty, f"untranslated in {PO.name}: {empty}"


def test_the_template_is_up_to_date():
    assert set(catalog(POT)) == marked_messages(), "re-run pybabel extract (see babel.cfg)"


def test_translations_keep_the_placeholders():
    for msgid, msgstr in catalog(PO).items():
        assert fields(msgstr) == fields(msgid), (msgid, msgstr)
        assert msgstr.count("%") == msgid.count("%"), (msgid, msgstr)  # argparse's help is %-formatted


def test_the_compiled_catalog_matches_the_po_file():
    with open(MO, "rb") as fh:
        compiled = gettext.GNUTranslations(fh)
    stale = {m: s for m, s in catalog(PO).items() if compiled.gettext(m) != s}
    assert not stale, f"run pybabel compile -D torchlab -d src/torchlab/locale -l zh: {sorted(stale)[:5]}"


def test_language_from_flag_and_environment(capsys, monkeypatch):
    assert main(["autograd"]) == 0
    english = capsys.readouterr().out
    assert not CJK.search(english) and "1. The forward pass records a graph" in english
    assert main(["autograd", "--lang", "zh"]) == 0
    chinese = capsys.readouterr().out
    assert "前向传播" in chinese and "梯度" in chinese
    assert main(["autograd"]) == 0  # no language is left over from the last call
    assert capsys.readouterr().out == english
    assert main(["--lang=en", "autograd"]) == 0
    assert capsys.readouterr().out == english

    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    assert main(["autograd"]) == 0
    assert capsys.readouterr().out == chinese
    assert main(["autograd", "--lang", "en"]) == 0  # the flag wins over the locale
    assert capsys.readouterr().out == english
    monkeypatch.setenv("LC_ALL", "C.UTF-8")  # POSIX: LC_ALL wins over LANG
    assert main(["autograd"]) == 0
    assert capsys.readouterr().out == english

    monkeypatch.delenv("LC_ALL")
    monkeypatch.setenv("LANG", "en_US.UTF-8")
    monkeypatch.setenv("TORCHLAB_LANG", "zh")  # torchlab's own variable wins over the locale
    assert main(["autograd"]) == 0
    assert capsys.readouterr().out == chinese


def test_json_output_is_the_same_in_both_languages(capsys):
    assert main(["autograd", "--json"]) == 0
    english = capsys.readouterr().out
    assert main(["autograd", "--json", "--lang", "zh"]) == 0
    assert capsys.readouterr().out == english


def test_help_in_chinese(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--lang", "zh", "train", "--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert "学习率" in out and "示例：" in out and "所有任务" in out and "选项" in out and "用法：" in out
    with pytest.raises(SystemExit):
        main(["--lang", "zh", "--help"])
    out = capsys.readouterr().out
    assert "一步步演示笔记中的自动求导" in out  # autograd's line in the list of commands
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert not CJK.search(out.replace("天上的云朵", "")) and "learning rate" in out


@pytest.mark.parametrize("argv", [["linreg", "--steps", "0"], ["train", "fashion-mnist", "--epochs", "0"]])
def test_errors_in_chinese_stay_one_line(capsys, argv):
    assert main(argv) == 2
    english = capsys.readouterr().err
    assert english.startswith("torchlab: error: ") and english.count("\n") == 1
    assert main(["--lang", "zh", *argv]) == 2
    chinese = capsys.readouterr().err
    assert chinese.startswith("torchlab：错误：") and chinese.count("\n") == 1 and "必须" in chinese


def test_speaking_builds_english_for_a_while():
    """What a run writes to its files (summary.json's error) stays English while the terminal speaks Chinese."""
    i18n.use("zh")
    assert i18n._("every task") == "所有任务"
    with i18n.speaking("en"):
        assert i18n._("every task") == "every task"
    assert i18n._("every task") == "所有任务" and i18n.current == "zh"


def test_from_environment():
    assert i18n.from_environment({}) == "en"
    assert i18n.from_environment({"LANG": "zh_TW.UTF-8"}) == "zh"
    assert i18n.from_environment({"LC_MESSAGES": "en_GB.UTF-8", "LANG": "zh_CN.UTF-8"}) == "en"
    assert i18n.from_environment({"TORCHLAB_LANG": "zh", "LC_ALL": "C"}) == "zh"
    assert i18n.language_in(["train", "--lang=zh"]) == "zh" and i18n.language_in(["train"]) is None


@pytest.mark.parametrize("argv, words", [
    (["predict", "missing.pt", "x.png"], "没有这个检查点"),
    (["train", "lm", "--corpus", "no-such-corpus.txt"], "没有语料"),
    (["conv-viz"], "只能且必须给出一个"),
    (["tensorboard", "no-such-folder"], "没有这个目录"),
])
def test_user_errors_in_chinese_stay_one_line(capsys, tmp_path, monkeypatch, argv, words):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    english = capsys.readouterr().err
    assert english.startswith("torchlab: error: ") and english.count("\n") == 1 and not CJK.search(english)
    assert main(["--lang", "zh", *argv]) == 2
    chinese = capsys.readouterr().err
    assert chinese.startswith("torchlab：错误：") and chinese.count("\n") == 1 and words in chinese


def test_runs_in_chinese(capsys, tmp_path):
    from tests.conftest import TINY, write_dataset

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--lang", "zh", "runs", str(empty)]) == 2
    assert "里面没有运行" in capsys.readouterr().err
    data = write_dataset(tmp_path / "data")
    argv = ["train", "fashion-mnist", "--data-dir", str(data), *TINY, "--run-dir", str(tmp_path / "runs" / "one")]
    assert main([*argv, "--epochs", "1"]) == 0
    capsys.readouterr()
    assert main(["runs", str(tmp_path / "runs")]) == 0
    english = capsys.readouterr().out
    assert english.startswith("run ") and "best val" in english and not CJK.search(english)
    assert main(["--lang", "zh", "runs", str(tmp_path / "runs")]) == 0
    chinese = capsys.readouterr().out
    header, rule = chinese.splitlines()[:2]
    assert "运行" in header and "最佳验证" in header and "状态" in header
    # Chinese characters take two columns: the last heading still starts above the last rule
    assert runs_width(header[:header.index("状态")]) == rule.rindex(" ") + 1
    assert main(["--lang", "zh", "runs", str(tmp_path / "runs"), "--json"]) == 0
    assert main(["runs", str(tmp_path / "runs"), "--json"]) == 0
    zh_json, en_json = capsys.readouterr().out.split("\n]\n", 1)
    assert zh_json + "\n]\n" == en_json


def runs_width(line: str) -> int:
    from torchlab.commands.runs import shown_width

    return shown_width(line)


def test_generate_and_eval_text_in_chinese():
    from torchlab.commands.evaluate import eval_text
    from torchlab.commands.predict import steps_text

    result = {"checkpoint": "best.pt", "task": "mnist", "model": "notes-cnn", "split": "test", "test_acc": 0.5,
              "test_loss": 1.0, "count": 2, "per_class_acc": {"0": 1.0, "1": 0.0}, "confusion": [[1, 0], [1, 0]],
              "confusion_png": "c.png"}
    english = eval_text(result)
    assert english.startswith("best.pt (mnist, notes-cnn): test accuracy 50.00% on 2 images, loss 1.0000")
    assert "per-class accuracy:" in english and english.endswith("confusion matrix image: c.png")
    i18n.use("zh")
    chinese = eval_text(result)
    assert "准确率 50.00%" in chinese and "混淆矩阵图像：c.png" in chinese
    assert steps_text({"inverted": True, "inversion": "light background"}) == "  [已反相（light background）]"


def test_inversion_reasons_are_translated_but_the_json_stays_english():
    from torchlab.commands.predict import steps_text
    from torchlab.data.photo import decide_inversion, reason_text

    light_background = np.full((20, 20), 0.9)
    light_background[5:15, 5:15] = 0.2  # a dark item
    invert, why = decide_inversion(light_background, "auto")
    assert invert and why["rule"] == "lighter"
    steps = {"inverted": True, "inversion": reason_text(why), "inversion_rule": why}
    assert steps["inversion"] == "background 0.90 is lighter than the item (0.20)"
    i18n.use("zh")
    assert steps_text(steps) == "  [已反相（背景 0.90 比物体（0.20）亮）]"
    assert reason_text(decide_inversion(light_background, "no")[1], i18n._) == "--invert no"


def test_tables_line_up_in_chinese(capsys):
    """Padding counts terminal columns: a Chinese header is as wide as its column of numbers."""
    assert main(["models", "--lang", "zh"]) == 0
    header, first = capsys.readouterr().out.splitlines()[:2]
    assert "参数量" in header and "笔记中的网络" in first  # the descriptions are translated too
    params_end = i18n.shown_width(header[:header.index("参数量") + 3])
    assert params_end == len(first.split("127,498")[0]) + len("127,498")
    assert i18n.pad("斜率", 6, right=True) == "  斜率" and i18n.pad("ab", 3) == "ab "


def test_runtime_and_doctor_lines_in_chinese():
    from torchlab.commands.doctor import auto_lines
    from torchlab.runinfo import scored_text

    i18n.use("zh")
    lines = auto_lines({"device": "cpu", "fast_recipe_table": "cpu", "measured": {}},
                       {"matmul fp32": 100.0, "matmul bf16": 1.0})
    assert lines[1].startswith("自动精度：fp32（bf16 矩阵乘法的速度是 fp32 的 0.01 倍") and "尚未测量" in lines[3]
    summary = {"test_scored": "best epoch 2; a sample of 1,000 of 10,000 test images, --max-steps run",
               "eval_sample": {"unit": "images", "val": 1000, "test": 1000}}
    assert scored_text(summary, "test") == "最佳 epoch 2；抽样：test 10,000 中的 1,000 张图像，--max-steps 运行"
    i18n.use("en")
    assert scored_text(summary, "test") == summary["test_scored"]  # English reads back exactly as stored
