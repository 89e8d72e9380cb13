import json
from pathlib import Path

import pytest
import torch

from torchlab.config import FAST, FAST_TARGETS, RECIPES, TrainConfig, resolve, save_toml
from torchlab.engine import Runtime
from torchlab.errors import UserError


def test_defaults_are_the_notes_settings():
    cfg = resolve({})
    assert (cfg.model, cfg.optimizer, cfg.lr, cfg.batch_size, cfg.augment) == ("notes-cnn", "adam", 1e-3, 64, False)


def test_precedence_defaults_recipe_toml_cli(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('recipe = "strong"\nepochs = 4\nlr = 0.05\nbatch-size = 32\n')
    cfg = resolve({"lr": 0.2}, str(toml))
    assert cfg.model == RECIPES["strong"]["model"]  # from the recipe
    assert cfg.epochs == 4 and cfg.batch_size == 32  # from the file (dashes allowed)
    assert cfg.lr == 0.2  # the flag wins
    assert cfg.seed == TrainConfig().seed  # untouched default


@pytest.mark.parametrize("text, fragment", [
    ("epochs = 'three'\n", "epochs must be int"),
    ("colour = 1\n", "unknown setting 'colour'"),
    ("optimizer = 'rmsprop'\n", "optimizer must be one of"),
    ("epochs = 0\n", "epochs must be at least 1"),
    ("lr = -1.0\n", "lr must not be negative"),
    ("epochs = [\n", "not valid TOML"),
])
def test_bad_toml_values_name_the_file(tmp_path, text, fragment):
    toml = tmp_path / "bad.toml"
    toml.write_text(text)
    with pytest.raises(UserError) as e:
        resolve({}, str(toml))
    assert fragment in str(e.value) and "bad.toml" in str(e.value)


def test_missing_toml_file():
    with pytest.raises(UserError, match="cannot read"):
        resolve({}, "nope.toml")


def test_int_accepted_for_float():
    assert resolve({"lr": 1}).lr == 1


def test_saved_toml_replays_the_config(tmp_path):
    cfg = resolve({"recipe": "strong", "run_dir": 'a "quoted" dir', "epochs": 7})
    save_toml(cfg, tmp_path / "c.toml")
    assert resolve({}, str(tmp_path / "c.toml")) == cfg


@pytest.mark.parametrize("device, available, kind", [("cpu", True, "cpu"), ("cuda", False, "cuda"),
                                                    ("auto", True, "cuda"), ("auto", False, "cpu")])
def test_fast_recipe_takes_the_settings_of_the_device(monkeypatch, device, available, kind):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    for target in (91, 93, 94):
        cfg = resolve({"task": "fashion-mnist", "recipe": "fast", "device": device, "target": target})
        for key, value in {**FAST[kind], **FAST_TARGETS[kind][target]}.items():
            assert getattr(cfg, key) == value, (target, key)
    assert resolve({"task": "fashion-mnist", "recipe": "fast", "device": device}).target == 94
    assert resolve({"task": "fashion-mnist", "recipe": "fast", "device": device, "epochs": 2}).epochs == 2  # flags win


def test_fast_recipe_hardware_settings_are_what_the_benchmark_measured():
    """benchmarks/time_to_accuracy.py records which precision, layout and compile setting won on each device."""
    for kind in ("cpu", "cuda"):
        path = Path(__file__).parents[1] / "benchmarks" / "recorded" / f"choices-{kind}.json"
        if not path.exists():
            assert kind == "cuda", "the CPU choices must be on record"
            continue
        chosen = json.loads(path.read_text())
        assert (FAST[kind]["channels_last"], FAST[kind]["compile"]) == (chosen["channels_last"], chosen["compile"])
        # "auto" precision is bf16 exactly where bf16 is native, as it was on the machine that measured it.
        assert FAST[kind]["precision"] in ("auto", chosen["precision"])
        if FAST[kind]["precision"] == "auto":
            assert chosen["precision"] == ("bf16" if chosen["native_bf16"] else "fp32")


@pytest.mark.parametrize("device, setting, expected", [("cpu", "auto", False), ("cuda", "auto", True),
                                                       ("cpu", "on", True), ("cuda", "off", False)])
def test_compile_auto_is_on_for_cuda_only(device, setting, expected):
    assert Runtime.choose(torch.device(device), "fp32", "auto", setting).compile is expected
