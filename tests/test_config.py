import pytest
import torch

from torchlab.config import FAST, FAST_TARGETS, RECIPES, TrainConfig, resolve, save_toml
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


@pytest.mark.parametrize("device, cuda, speedup, kind", [
    ("cpu", True, 0.01, "cpu"), ("cpu", False, 2.0, "cpu-bf16"), ("cuda", True, 0.01, "gpu"),
    ("auto", True, 0.01, "gpu"), ("auto", False, 0.01, "cpu"), ("auto", False, 1.9, "cpu-bf16"),
])
def test_fast_recipe_takes_the_table_of_the_device(monkeypatch, device, cuda, speedup, kind):
    """The table follows the device and, on the CPU, the measured bf16 rate (stubbed here), never CPU flags."""
    from torchlab import hardware

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(hardware, "bf16_speedup", lambda device, measure=True: speedup)
    for target in (91, 93, 94):
        cfg = resolve({"task": "fashion-mnist", "recipe": "fast", "device": device, "target": target})
        for key, value in {**FAST, **FAST_TARGETS[kind][target]}.items():
            assert getattr(cfg, key) == value, (target, key)
        # No recipe fixes a device setting: each is measured on the machine.
        assert (cfg.precision, cfg.channels_last, cfg.compile, cfg.threads) == ("auto", "auto", "auto", 0)
    assert resolve({"task": "fashion-mnist", "recipe": "fast", "device": device}).target == 94
    assert resolve({"task": "fashion-mnist", "recipe": "fast", "device": device, "epochs": 2}).epochs == 2  # flags win


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_no_recipe_forces_a_device_setting(recipe):
    cfg = resolve({"recipe": recipe, "device": "cpu"})
    assert (cfg.precision, cfg.channels_last, cfg.compile, cfg.threads) == ("auto", "auto", "auto", 0)
