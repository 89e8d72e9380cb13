"""tune.py without the command line: the --param grammar against the settings' bounds, and the trainer's
on_epoch hook that a search prunes runs with (a pruned run is a consistent run directory)."""

from __future__ import annotations

import json

import pytest

import torchlab
from tests.conftest import TINY
from torchlab import runinfo, tune
from torchlab.cli import main
from torchlab.config import LMTrainConfig, TrainConfig
from torchlab.errors import Pruned, UserError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("text, param", [
    ("lr=1e-4:1e-1:log", tune.Param("lr", 1e-4, 0.1, log=True)),
    ("weight-decay=0:1e-3", tune.Param("weight_decay", 0.0, 1e-3)),
    ("batch_size=32,64,128", tune.Param("batch_size", choices=(32, 64, 128))),
    ("epochs=1:4", tune.Param("epochs", 1, 4)),
    ("lr=0.01,0.1", tune.Param("lr", choices=(0.01, 0.1))),
    ("optimizer=sgd,adamw", tune.Param("optimizer", choices=("sgd", "adamw"))),
    ("augment=true,false", tune.Param("augment", choices=(True, False))),
])
def test_params_keep_the_settings_types(text, param):
    parsed = tune.parse_param(text, TrainConfig)
    assert parsed == param
    assert [type(v) for v in parsed.choices] == [type(v) for v in param.choices]
    assert type(parsed.low) is type(param.low)


@pytest.mark.parametrize("text, words", [
    ("nope=1:2", "'nope' is not a setting of this task"),
    ("cell=lstm,gru", "'cell' is not a setting of this task"),  # a language model's, not an image task's
    ("run_dir=a,b", "is not a setting"),
    ("lr", "malformed (no values after =)"),
    ("lr=1:2:3", "malformed (a range is LOW:HIGH or LOW:HIGH:log)"),
    ("lr=a:b", "malformed (a is not float)"),
    ("epochs=1.5:3", "malformed (1.5 is not int)"),
    ("lr=0.1:0.01", "LOW must be below HIGH"),
    ("lr=0:1:log", "a log range needs LOW above 0"),
    ("optimizer=sgd:adam", "optimizer is not a number"),
    ("batch_size=32,,64", "an empty value"),
    ("lr=-1:1", "--param lr: lr must not be negative, got -1.0"),
    ("momentum=0:1", "--param momentum: momentum must be in [0, 1), got 1.0"),
    ("optimizer=sgd,lion", "optimizer must be one of sgd, adam, adamw, got 'lion'"),
    ("seed=0,5000000000", "seed must be between 0 and 4294967295"),
])
def test_bad_params_are_one_line_errors(text, words):
    with pytest.raises(UserError) as e:
        tune.parse_param(text, TrainConfig)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_default_space_leaves_out_the_settings_given_as_flags():
    assert [p.name for p in tune.parse_space([], "fashion-mnist", {})] == ["lr", "weight_decay", "batch_size"]
    assert [p.name for p in tune.parse_space([], "fashion-mnist", {"batch_size": 50})] == ["lr", "weight_decay"]
    lm = tune.parse_space([], "lm", {})
    assert all(tune.parse_param(t, LMTrainConfig) in lm for t in tune.DEFAULT_SPACE["lm"])
    with pytest.raises(UserError, match="--param lr: given twice"):
        tune.parse_space(["lr=1e-3:1e-1"], "fashion-mnist", {"lr": 0.01})
    with pytest.raises(UserError, match="given twice"):
        tune.parse_space(["lr=1e-3:1e-1", "lr=0.1,0.2"], "fashion-mnist", {})


def test_a_pruned_run_ends_consistently_and_runs_shows_it(tiny_data, tmp_path, capsys):
    seen = []

    def on_epoch(epoch, record):
        seen.append((epoch, record["val_acc"]))
        raise Pruned("stop")

    run_dir = tmp_path / "runs" / "pruned"
    with pytest.raises(Pruned):
        torchlab.train("fashion-mnist", data_dir=str(tiny_data), device="cpu", val_size=100, batch_size=50,
                       epochs=2, precision="fp32", threads=1, channels_last="off", compile="off",
                       run_dir=str(run_dir), quiet=True, on_epoch=on_epoch)
    assert [e for e, _ in seen] == [1] and 0 <= seen[0][1] <= 1
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "pruned" and summary["pruned_epoch"] == 1 and summary["epochs"] == 1
    assert "test_acc" not in summary and len(summary["history"]) == 1
    assert (run_dir / "last.pt").is_file() and (run_dir / "best.pt").is_file() and (run_dir / "config.toml").is_file()
    shown = runinfo.read(run_dir)
    assert shown["shown"] == "pruned" and shown["resume"] is None
    assert main(["runs", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "pruned" in out.splitlines()[2] and "continue it with" not in out


def test_the_hook_sees_every_epoch_of_a_run_it_lets_finish(tiny_data, tmp_path):
    seen = []
    run = torchlab.train("fashion-mnist", data_dir=str(tiny_data), device="cpu", val_size=100, batch_size=50, epochs=2,
                         precision="fp32", threads=1, channels_last="off", compile="off", quiet=True,
                         run_dir=str(tmp_path / "run"), on_epoch=lambda epoch, record: seen.append(record["epoch"]))
    assert seen == [1, 2] and run.summary["status"] == "finished"


def test_without_optuna_the_error_names_the_extra(monkeypatch, tiny_data, capsys):
    import builtins

    real_import = builtins.__import__

    def no_optuna(name, *args, **kwargs):
        if name == "optuna" or name.startswith("optuna."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_optuna)
    assert main(["tune", "fashion-mnist", "--trials", "2", *TINY, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'torchlab[tune]'" in err and "\n" not in err.strip()
