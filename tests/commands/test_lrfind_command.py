"""`torchlab lr-find` and `torchlab train --lr find`: files, listing, the found lr in config.toml, errors."""

from __future__ import annotations

import json
import random

import pytest

from tests.conftest import TINY, error_line
from torchlab.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = [*TINY, "--precision", "fp32", "--threads", "1", "--channels-last", "off", "--compile", "off"]


def test_lr_find_writes_its_files_and_is_no_broken_run(tiny_data, tmp_path, capsys):
    out = tmp_path / "runs" / "find"
    assert main(["lr-find", "fashion-mnist", "--data-dir", str(tiny_data), *FAST, "--label-smoothing", "0.1",
                 "--start", "1e-5", "--end", "10", "--steps", "60", "--run-dir", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "suggested lr" in text and str(out) in text
    record = json.loads((out / "lr_find.json").read_text())
    assert len(record["lrs"]) == len(record["losses"]) == len(record["smoothed"]) <= 60
    assert record["rule"] in ("steepest", "minimum") and record["suggestion"] > 0
    assert (out / "lr_find.png").stat().st_size > 1000
    assert list(out.glob("events.out.tfevents.*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    tags = EventAccumulator(str(out)).Reload().Tags()["scalars"]
    assert {"lr_find/loss", "lr_find/smoothed", "lr_find/lr"} <= set(tags)
    main(["runs", str(tmp_path / "runs")])  # exit 2: the folder holds no training run
    listed = capsys.readouterr().err
    assert "demo log folder(s) of lr-find" in listed and "hold no run" not in listed


def test_train_lr_find_trains_with_the_found_lr(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "fashion-mnist", "--data-dir", str(tiny_data), *FAST, "--epochs", "1", "--lr", "find",
                 "--run-dir", str(run)]) == 0
    err = capsys.readouterr().err
    found = json.loads((run / "lr_find" / "lr_find.json").read_text())["suggestion"]
    lines = [line for line in err.splitlines() if line.startswith("--lr find: training with lr")]
    assert len(lines) == 1 and f"{found:.3g}" in lines[0]
    assert f"lr = {found!r}" in (run / "config.toml").read_text().splitlines()
    assert main(["train", "--resume", str(run), "--lr", "find", "--quiet"]) == 2
    assert "--lr find" in error_line(capsys)


def test_lm_lr_find(tmp_path, capsys):
    rng = random.Random(1)
    (tmp_path / "en.txt").write_text("".join(rng.choice(("The lamp was bright. ", "We sat and listened. ",
                                                         "He smiled at us.\n")) for _ in range(120)))
    out = tmp_path / "lm-find"
    assert main(["lr-find", "lm", "--corpus", str(tmp_path / "en.txt"), "--device", "cpu", "--embed-size", "16",
                 "--hidden-size", "32", "--layers", "1", "--bptt", "8", "--batch-size", "4", "--precision", "fp32",
                 "--threads", "1", "--steps", "40", "--end", "100", "--run-dir", str(out), "--json", "--quiet"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["run_dir"] == str(out) and 10 <= len(record["lrs"]) <= 40 and record["suggestion"] > 0
    assert (out / "lr_find.png").exists()


@pytest.mark.parametrize("flags, words", [(["--start", "1", "--end", "0.1"], "below --end"),
                                          (["--start", "0"], "--start 0.0: must be greater than 0"),
                                          (["--end", "-1"], "--end -1.0: must be greater than 0"),
                                          (["--steps", "5"], "--steps 5: must be at least 10"),
                                          (["--lr", "fast"], "invalid float value")])
def test_bad_flags(tiny_data, capsys, flags, words):
    assert main(["lr-find", "fashion-mnist", "--data-dir", str(tiny_data), *FAST, *flags, "--quiet"]) == 2
    assert words in error_line(capsys)
