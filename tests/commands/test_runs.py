"""`torchlab runs`: finished, max-steps, interrupted, failed, killed, demo and foreign folders, as a table and
as JSON."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import TINY, write_dataset
from torchlab import runinfo
from torchlab.cli import main


def train(data, run_dir, *extra) -> int:
    return main(["train", "fashion-mnist", "--data-dir", str(data), *TINY, "--run-dir", str(run_dir), *extra])


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="module")
def made_runs(tmp_path_factory):
    """runs/ with one run of each kind, plus a folder and a file that are not runs (made once per module)."""
    tmp = tmp_path_factory.mktemp("runs")
    tiny_data = write_dataset(tmp / "data")
    root = tmp / "runs"
    assert train(tiny_data, root / "done", "--epochs", "2") == 0
    assert train(tiny_data, root / "cut", "--epochs", "3", "--max-steps", "15") == 0  # stops inside epoch 2
    assert train(tiny_data, root / "nan", "--optimizer", "sgd", "--lr", "1e30", "--momentum", "0") == 2
    shutil.copytree(root / "done", root / "group" / "killed")  # nested one level down
    summary = json.loads((root / "group" / "killed" / "summary.json").read_text())
    summary.update(status="running", pid=dead_pid(), epochs=1)  # as a process killed with SIGKILL leaves it
    (root / "group" / "killed" / "summary.json").write_text(json.dumps(summary))
    (root / "notes").mkdir()
    (root / "notes" / "todo.txt").write_text("not a run")
    (root / "readme.txt").write_text("not a run either")
    return root


@pytest.fixture
def runs(made_runs, tmp_path):
    return shutil.copytree(made_runs, tmp_path / "runs")  # each test may change its own copy


def listed(root, capsys, *flags) -> tuple[int, str, str]:
    code = main(["runs", str(root), *flags])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_table_shows_each_status_and_how_to_resume(runs, capsys):
    code, out, err = listed(runs, capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["run", "task", "model", "epochs", "best", "val", "test", "duration", "started", "status"]
    status = {line.split()[0]: line.split()[-1] for line in lines[2:6]}
    assert status == {"done": "finished", "cut": "max-steps", "nan": "failed", "group/killed": "interrupted"}
    done = next(line for line in lines if line.startswith("done "))
    assert " 2/2 " in done and "100.00%" in done
    cut = next(line for line in lines if line.startswith("cut "))
    assert " 1.5/3 " in cut  # 10 steps per epoch: step 15 is half-way through epoch 2
    assert (f"cut stopped at --max-steps after 1.5 epochs; finish it with: torchlab train --resume {runs / 'cut'} "
            "--max-steps 0") in out
    assert f"group/killed was killed; continue it with: torchlab train --resume {runs / 'group' / 'killed'}" in out
    assert "nan" not in "".join(line for line in lines if "continue it" in line)  # no checkpoint to resume from
    assert "skipped 1 folder(s) that hold no run: notes" in err


def test_json_has_the_raw_values(runs, capsys):
    code, out, _ = listed(runs, capsys, "--json")
    rows = {r["run"]: r for r in json.loads(out)}
    assert code == 0 and set(rows) == {"done", "cut", "nan", "group/killed"}
    summary = json.loads((runs / "done" / "summary.json").read_text())
    assert rows["done"]["test"] == summary["test_acc"] and rows["done"]["best_val"] == summary["best_val_acc"]
    assert summary["command"].startswith("torchlab train fashion-mnist") and summary["started"]
    assert rows["cut"]["epochs"] == 1 and rows["cut"]["epochs_done"] == 1.5 and rows["cut"]["epochs_planned"] == 3
    assert rows["cut"]["status"] == "max-steps" and rows["cut"]["resume"].endswith("--max-steps 0")
    assert rows["done"]["epochs_done"] == 2
    assert rows["nan"]["status"] == "failed" and rows["nan"]["test"] is None and rows["nan"]["resume"] is None


@pytest.mark.parametrize("column", ["duration", "run", "status", "test"])
def test_sort_by_a_column(runs, capsys, column):
    rows = json.loads(listed(runs, capsys, "--json", "--sort", column)[1])
    values = [r[column] for r in rows if r[column] is not None]
    assert values == sorted(values)
    assert all(r[column] is None for r in rows[len(values):])  # unknown values last
    reverse = json.loads(listed(runs, capsys, "--json", "--sort", column, "--reverse")[1])
    assert [r[column] for r in reverse if r[column] is not None] == values[::-1]


def test_newest_first_by_default(runs, capsys):
    dates = [r["date"] for r in json.loads(listed(runs, capsys, "--json")[1])]
    assert dates == sorted(dates, reverse=True)


def test_a_running_run_stays_running_while_its_process_lives(runs):
    summary = json.loads((runs / "done" / "summary.json").read_text())
    summary["status"] = "running"  # pid is this test's process: alive
    (runs / "done" / "summary.json").write_text(json.dumps(summary))
    assert runinfo.read(runs / "done")["shown"] == "running"


def test_a_single_run_directory_lists_itself(runs, capsys):
    code, out, _ = listed(runs / "done", capsys)
    assert code == 0 and out.splitlines()[2].split()[-1] == "finished"


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_no_runs_is_a_one_line_error(tmp_path, capsys, make):
    folder = tmp_path / "nothing"
    if make == "empty":
        folder.mkdir()
    code, out, err = listed(folder, capsys)
    assert code == 2 and out == ""
    assert err.strip().splitlines()[-1].startswith(f"torchlab: error: {folder}:")


def test_a_max_steps_run_finishes_with_the_command_runs_gives(runs, capsys):
    rows = {r["run"]: r for r in json.loads(listed(runs, capsys, "--json")[1])}
    argv = rows["cut"]["resume"].split()[1:]  # torchlab train --resume DIR --max-steps 0
    assert main([*argv, "--quiet"]) == 0
    capsys.readouterr()
    rows = {r["run"]: r for r in json.loads(listed(runs, capsys, "--json")[1])}
    assert (rows["cut"]["status"], rows["cut"]["epochs_done"], rows["cut"]["resume"]) == ("finished", 3, None)


def test_demo_folders_are_named_once_and_not_as_foreign(runs, tmp_path, capsys):
    from PIL import Image

    assert main(["linreg", "--quiet", "--steps", "20", "--device", "cpu", "--run-dir", str(runs / "line")]) == 0
    Image.new("L", (8, 8), 128).save(tmp_path / "gray.png")
    assert main(["image", str(tmp_path / "gray.png"), "--logdir", str(runs / "pictures"), "--quiet"]) == 0
    (runs / "tb").mkdir()
    assert main(["image", str(tmp_path / "gray.png"), "--logdir", str(runs / "done"), "--quiet"]) == 0  # a run
    capsys.readouterr()
    code, out, err = listed(runs, capsys)
    assert code == 0 and "line" not in out and "pictures" not in out
    notes = err.strip().splitlines()
    assert notes[0] == "not listed: 2 demo log folder(s) of image, linreg (no training run): line, pictures"
    assert notes[1] == "skipped 2 folder(s) that hold no run: notes, tb"
    assert {r["run"] for r in json.loads(listed(runs, capsys, "--json")[1])} == {"done", "cut", "nan", "group/killed"}
    assert not (runs / "done" / runinfo.DEMO_FILE).exists()  # a run's folder stays a run


@pytest.mark.parametrize("summary, text", [
    ({"epochs": 2, "epochs_done": 2}, "2"), ({"epochs": 1, "epochs_done": 1.5}, "1.5"),
    ({"epochs": 0, "epochs_done": 0.0031}, "0.0031"),  # 5 steps of a long epoch are not "0 epochs"
    ({"epochs": 2, "epochs_done": 2.3333}, "2.33"), ({"epochs": 3}, "3"), ({}, "-"),
])
def test_epochs_count_a_partial_epoch(summary, text):
    assert runinfo.epochs_text(summary) == text
