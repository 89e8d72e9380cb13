"""`torchlab tune`: a study with a pruned trial, its results, continuing it, Ctrl-C, two processes on one
SQLite file, and the bad inputs."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import optuna
import pytest

from tests.conftest import TINY, error_line
from torchlab import tune
from torchlab.cli import build_parser, main
from torchlab.config import resolve

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = [*TINY, "--precision", "fp32", "--threads", "1", "--channels-last", "off", "--compile", "off"]


class PruneTrial(optuna.pruners.BasePruner):
    """Prunes one trial by its number at its first report: the pruned path through the trainer is the real one."""

    def __init__(self, number: int, error: type[BaseException] | None = None):
        self.number, self.error = number, error

    def prune(self, study, trial) -> bool:
        if trial.number == self.number and self.error is not None:
            raise self.error  # a Ctrl-C arriving at the end of an epoch
        return trial.number == self.number


def tune_argv(tiny_data, folder, trials: int, *extra) -> list[str]:
    return ["tune", "fashion-mnist", "--trials", str(trials), "--data-dir", str(tiny_data), *FAST,
            "--study-dir", str(folder), "--param", "lr=1e-3:1e-2:log", *extra, "--quiet"]


def load(folder) -> optuna.Study:
    return optuna.load_study(study_name=folder.name, storage=f"sqlite:///{folder / 'study.db'}")


def test_a_study_with_a_pruned_trial(tiny_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tune, "make_pruner", lambda: PruneTrial(1))
    folder = tmp_path / "runs" / "study"
    assert main(tune_argv(tiny_data, folder, 3, "--epochs", "2", "--param", "optimizer=adam,adamw")) == 0
    out = capsys.readouterr().out
    states = [t.state.name for t in load(folder).trials]
    assert states == ["COMPLETE", "PRUNED", "COMPLETE"]
    pruned = json.loads((folder / "trial-0001" / "summary.json").read_text())
    assert pruned["status"] == "pruned" and pruned["pruned_epoch"] == 1
    assert pruned["command"].startswith("torchlab train fashion-mnist ") and "--run-dir" in pruned["command"]
    for n in (0, 2):
        assert json.loads((folder / f"trial-{n:04d}" / "summary.json").read_text())["status"] == "finished"
    table = out.split("\n\n")[0].splitlines()
    assert table[0].split() == ["trial", "state", "value", "params", "run"] and len(table) == 5
    assert "pruned" in table[3] and "optimizer=" in table[3] and "lr=" in table[3]
    check_best(out, folder)
    assert main(["runs", str(tmp_path / "runs")]) == 0  # the study folder holds runs, not a broken run
    listed = capsys.readouterr()
    assert listed.out.count("study/trial-000") == 3 and "pruned" in listed.out and "hold no run" not in listed.err


def check_best(out: str, folder) -> None:
    """The best trial's command parses as `torchlab train` and best.toml loads with --config, to its values."""
    best = load(folder).best_trial
    line = next(line for line in out.splitlines() if line.startswith("train it with: "))
    args = build_parser().parse_args(shlex.split(line[len("train it with: "):])[1:])
    assert args.command == "train" and args.lr == best.params["lr"] and args.optimizer == best.params["optimizer"]
    cfg = resolve({}, str(folder / "best.toml"))
    assert (cfg.task, cfg.lr, cfg.optimizer, cfg.batch_size, cfg.epochs) == (
        "fashion-mnist", best.params["lr"], best.params["optimizer"], 50, 2)
    assert (folder / "best.toml").read_text() in out


def test_the_same_command_continues_the_study(tiny_data, tmp_path, capsys):
    folder = tmp_path / "study"
    assert main(tune_argv(tiny_data, folder, 2, "--epochs", "1")) == 0
    first = (folder / "trial-0000" / "summary.json").read_text()
    assert main(tune_argv(tiny_data, folder, 3, "--epochs", "1")) == 0
    assert [t.number for t in load(folder).trials] == [0, 1, 2]
    assert (folder / "trial-0000" / "summary.json").read_text() == first  # no trial ran again
    assert main(tune_argv(tiny_data, folder, 3, "--epochs", "1")) == 0  # done: no trial, the results again
    assert len(load(folder).trials) == 3 and "trial-0002" in capsys.readouterr().out


def test_ctrl_c_keeps_the_study_and_the_run_resumable(tiny_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tune, "make_pruner", lambda: PruneTrial(1, KeyboardInterrupt))
    folder = tmp_path / "study"
    assert main(tune_argv(tiny_data, folder, 2, "--epochs", "1")) == 130
    captured = capsys.readouterr()
    assert "tune interrupted; the study is kept in" in captured.err and f"--study-dir {folder}" in captured.err
    assert "complete" in captured.out and "fail" in captured.out  # the trials so far
    assert json.loads((folder / "trial-0001" / "summary.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(tune, "make_pruner", lambda: PruneTrial(-1))
    assert main(tune_argv(tiny_data, folder, 2, "--epochs", "1")) == 0
    assert [t.state.name for t in load(folder).trials] == ["COMPLETE", "FAIL", "COMPLETE"]


@pytest.mark.isa_independent
def test_two_processes_share_one_sqlite_study(tiny_data, tmp_path, rates_on_disk):
    folder = tmp_path / "shared"
    argv = [sys.executable, "-m", "torchlab", *tune_argv(tiny_data, folder, 4, "--epochs", "1")]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    trials = load(folder).trials
    done = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(done) == 4 and len(trials) == 4
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    dirs = [t.user_attrs["run_dir"] for t in trials]
    assert len(set(dirs)) == 4 and all((folder / f"trial-{n:04d}" / "summary.json").is_file() for n in range(4))
    pids = {json.loads((folder / f"trial-{n:04d}" / "summary.json").read_text())["pid"] for n in range(4)}
    assert pids <= {p.pid for p in procs}


@pytest.mark.parametrize("extra, words", [
    (["--param", "colour=1:2"], "--param colour=1:2: 'colour' is not a setting of this task"),
    (["--param", "lr=1e-3::log"], "malformed"),
    (["--param", "weight_decay=-1:1"], "--param weight_decay: weight_decay must not be negative"),
    (["--param", "lr=0.01:1", "--lr", "0.1"], "--param lr: given twice"),
    (["--run-dir", "x"], "--run-dir does not apply"),
    (["--lr", "find"], "--lr find would pick"),
    (["--trials", "0"], "--trials 0: must be at least 1"),
])
def test_bad_inputs(tiny_data, tmp_path, capsys, extra, words):
    assert main(tune_argv(tiny_data, tmp_path / "s", 2, *extra)) == 2
    assert words in error_line(capsys)
    assert not (tmp_path / "s").exists()  # refused before anything was made


def test_an_unwritable_folder_and_an_unopenable_storage(tiny_data, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(tune_argv(tiny_data, tmp_path / "file" / "study", 2)) == 2
    assert f"--study-dir {tmp_path / 'file' / 'study'}: cannot create" in error_line(capsys)
    for url in ("nodb://nowhere", f"sqlite:///{tmp_path / 'missing' / 'folder' / 'x.db'}", "not a url"):
        assert main(tune_argv(tiny_data, tmp_path / "s", 2, "--storage", url)) == 2
        assert f"--storage {url}: cannot open the study database" in error_line(capsys)
    (tmp_path / "bad.db").write_text("this is no database")
    assert main(tune_argv(tiny_data, tmp_path / "s", 2, "--storage", f"sqlite:///{tmp_path / 'bad.db'}")) == 2
    assert "cannot open the study database" in error_line(capsys)


def test_a_locked_database_is_a_one_line_error(tiny_data, tmp_path, capsys, monkeypatch):
    """Another process holds SQLite's write lock for longer than tune waits: one line, exit 2, nothing run."""
    import sqlite3

    from torchlab import tune

    monkeypatch.setattr(tune, "LOCK_WAIT", 0.2)
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path)
    holder.execute("create table t (x)")
    holder.execute("begin exclusive")  # as a writer in another process would hold it
    try:
        assert main(tune_argv(tiny_data, tmp_path / "s", 2, "--storage", f"sqlite:///{path}")) == 2
        line = error_line(capsys)
        assert f"--storage sqlite:///{path}: cannot open the study database" in line and "locked" in line
        assert not list((tmp_path / "s").glob("trial-*"))
    finally:
        holder.rollback()
        holder.close()
