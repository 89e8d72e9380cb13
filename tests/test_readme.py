"""Both READMEs: every `torchlab ...` command they show parses, and every sub-command's --help has an example."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from torchlab.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
READMES = ("README.md", "README.zh-CN.md")


def commands(text: str) -> list[str]:
    """`torchlab ...` lines of code blocks and inline code, without comments or continuation lines."""
    found = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        joined = block.replace("\\\n", " ")
        found += [line.split("#")[0].strip() for line in joined.splitlines()]
    found += re.findall(r"`(torchlab [^`]+)`", text)
    return [c[c.index("torchlab "):] for c in found if "torchlab " in c and "..." not in c]


@pytest.mark.parametrize("readme", READMES)
def test_every_command_in_the_readme_parses(readme):
    text = (ROOT / readme).read_text(encoding="utf-8")
    lines = commands(text)
    assert len(lines) >= 15
    parser = build_parser()
    subcommands = parser._subparsers._group_actions[0].choices
    for line in lines:
        argv = [a.replace("<run>", "r") for a in shlex.split(line)[1:]]
        if (len(argv) == 1 and argv[0] in subcommands) or "--help" in argv:
            continue  # prose naming a command ("written by `torchlab report`"); --help is tested below
        args = parser.parse_args(argv)  # an unknown command, flag or choice raises UserError
        assert hasattr(args, "func"), line


def test_the_chinese_readme_maps_every_section_of_the_notes():
    text = (ROOT / "README.zh-CN.md").read_text(encoding="utf-8")
    for section in ("张量与图片", "Tensorboard", "transform", "创建网络结构", "反向传播", "线性回归", "卷积", "池化",
                    "BP神经网络", "FashionMnist", "RNN / LSTM / GRU"):
        assert f"| {section}" in text, section
    english = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "| BP神经网络" in english and "README.zh-CN.md" in english


def test_every_command_has_a_description_and_an_example(capsys):
    subcommands = build_parser()._subparsers._group_actions[0].choices
    assert {"train", "runs", "report", "tensorboard", "generate"} <= set(subcommands)
    for name in subcommands:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        out = capsys.readouterr().out
        assert e.value.code == 0
        description = out.split("\n\n")[1]
        assert description.strip() and "\n" not in description.strip().replace("\n  ", " "), name
        assert f"example:\n  torchlab {name}" in out, name
