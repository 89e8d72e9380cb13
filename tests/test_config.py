import dataclasses
import math
import shlex

import pytest
import torch

from tests.conftest import error_line
from torchlab.cli import main
from torchlab.config import CONFIGS, LMTrainConfig, TrainConfig, check_values, config_class, resolve, resumed, save_toml
from torchlab.errors import UserError
from torchlab.recipes import FAST, FAST_TARGETS, RECIPES


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
    ("lr = nan\n", "lr must be a finite number, got nan"),
    ("epochs = true\n", "epochs must be int"),  # a bool is no number of epochs
    ("target = 92\n", "target must be one of 91, 93, 94"),
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


# --- the checks every field gets from its metadata ---------------------------------------------------

FIELDS = [pytest.param(cls, f, id=f"{cls.__name__}.{f.name}") for cls in CONFIGS for f in dataclasses.fields(cls)]
BOUNDED = [p for p in FIELDS if p.values[1].metadata["lo"] is not None or p.values[1].metadata["hi"] is not None]
FLOATS = [p for p in FIELDS if type(p.values[1].default) is float]
WITH_CHOICES = [p for p in FIELDS if p.values[1].metadata["choices"]]
# Today's settings a resumed run may change (epochs: only after a constant schedule).
RESUMABLE = {"epochs", "device", "threads", "max_steps", "log_every", "eval_batch_size", "data_dir", "test_every_epoch",
             "patience"}


def refused(cls, key, value, fragment):
    with pytest.raises(UserError) as e:
        check_values({key: value}, "here", cls)
    assert str(e.value).startswith(f"here: {key} {fragment}") and "\n" not in str(e.value), str(e.value)


def below(value):
    return value - 1 if isinstance(value, int) else math.nextafter(value, -math.inf)


def above(value):
    return value + 1 if isinstance(value, int) else math.nextafter(value, math.inf)


@pytest.mark.parametrize("cls, f", FIELDS)
def test_every_default_passes_its_own_checks(cls, f):
    check_values({f.name: f.default}, "here", cls)


@pytest.mark.parametrize("cls, f", FIELDS)
def test_every_number_has_bounds_and_only_numbers_do(cls, f):
    meta, kind = f.metadata, type(f.default)
    if kind in (int, float) and not meta["choices"]:
        assert meta["lo"] is not None, f.name
    if kind not in (int, float):
        assert meta["lo"] is None and meta["hi"] is None, f.name


@pytest.mark.parametrize("cls, f", FIELDS)
def test_a_value_of_the_wrong_type_is_refused(cls, f):
    kind = type(f.default)
    wrong = {str: [1, True], int: ["1", 1.0, True], float: ["1.0", True], bool: [1, "true"]}[kind]
    for value in wrong:
        refused(cls, f.name, value, f"must be {kind.__name__}, got {value!r}")


@pytest.mark.parametrize("cls, f", BOUNDED)
def test_each_bound_is_enforced_on_both_sides(cls, f):
    meta, kind = f.metadata, type(f.default)
    lo, hi = meta["lo"], meta["hi"]
    if hi is None:
        text = "must not be negative" if lo == 0 else f"must be at least {lo}"
    else:
        text = f"must be in [{lo}, {hi})" if meta["hi_open"] else f"must be between {lo} and {hi}"
    lo, hi = (None if b is None else kind(b) for b in (lo, hi))
    if lo is not None:
        check_values({f.name: lo}, "here", cls)  # lower bounds are inclusive
        refused(cls, f.name, below(lo), text)
    if hi is not None and meta["hi_open"]:
        check_values({f.name: below(hi)}, "here", cls)
        refused(cls, f.name, hi, text)
    elif hi is not None:
        check_values({f.name: hi}, "here", cls)
        refused(cls, f.name, above(hi), text)


@pytest.mark.parametrize("cls, f", FLOATS)
def test_floats_must_be_finite(cls, f):
    for value in (math.nan, math.inf, -math.inf, 10 ** 400):  # the last: an int too large for a float
        refused(cls, f.name, value, "must be a finite number")


@pytest.mark.parametrize("cls, f", WITH_CHOICES)
def test_choices_are_enforced(cls, f):
    choices = f.metadata["choices"]
    for choice in choices:
        check_values({f.name: choice}, "here", cls)
    outside = "no-such-choice" if isinstance(f.default, str) else max(choices) + 1
    refused(cls, f.name, outside, "must be one of")


def other_value(f):
    """A valid value of the field that differs from its default."""
    meta, default = f.metadata, f.default
    if meta["choices"]:
        return next(c for c in meta["choices"] if c != default)
    if isinstance(default, bool):
        return not default
    if isinstance(default, str):
        return default + "-x"
    if meta["hi"] is None:
        return default + 1
    if isinstance(default, float):
        return (default + meta["hi"]) / 2
    return default + 1 if default < meta["hi"] else default - 1


@pytest.mark.parametrize("cls, f", FIELDS)
def test_resuming_changes_only_the_resumable_settings(cls, f):
    saved = dataclasses.asdict(cls())
    value = other_value(f)
    check_values({f.name: value}, "here", cls)
    task = saved["task"]
    # An image run's schedule is constant (more epochs may follow), a language model's cosine (they may not);
    # a language model's eval streams start from a zero state, so their count changes its perplexity.
    allowed = f.name in RESUMABLE and (f.name, task) not in {("epochs", "lm"), ("eval_batch_size", "lm")}
    if allowed:
        assert getattr(resumed(task, saved, {f.name: value}), f.name) == value
    else:
        with pytest.raises(UserError) as e:
            resumed(task, saved, {f.name: value})
        flag = "--" + f.name.replace("_", "-")
        assert str(e.value) == (f"{flag} cannot change when resuming (the run used {f.default!r}) "
                                f"(start a new run to change it)")
    assert getattr(resumed(task, saved, {f.name: f.default}), f.name) == f.default  # no change: always fine


@pytest.mark.parametrize("cls, schedule, allowed", [
    (TrainConfig, "constant", True), (TrainConfig, "onecycle", False),
    (LMTrainConfig, "constant", True), (LMTrainConfig, "cosine", False),
])
def test_more_epochs_only_after_a_constant_schedule(cls, schedule, allowed):
    saved = dataclasses.asdict(cls(schedule=schedule))
    if allowed:
        assert resumed(saved["task"], saved, {"epochs": 99}).epochs == 99
    else:
        with pytest.raises(UserError, match="--epochs cannot change when resuming"):
            resumed(saved["task"], saved, {"epochs": 99})


def test_resuming_checks_the_given_values_and_keeps_old_saved_configs():
    saved = dataclasses.asdict(TrainConfig(epochs=5))
    with pytest.raises(UserError, match="command line: max_steps must not be negative"):
        resumed("fashion-mnist", saved, {"max_steps": -1})
    with pytest.raises(UserError, match="'bptt' is not a setting for image classification"):
        resumed("fashion-mnist", saved, {"bptt": 8})
    del saved["image_size"]  # a run saved before the setting existed gets its default
    cfg = resumed("fashion-mnist", saved, {"max_steps": 3})
    assert (cfg.epochs, cfg.max_steps, cfg.image_size) == (5, 3, TrainConfig.image_size)


def test_config_class():
    assert config_class("lm") is LMTrainConfig
    assert config_class("fashion-mnist") is TrainConfig and config_class("image-folder") is TrainConfig


@pytest.mark.parametrize("flags, message", [
    (["--lr", "nan"], "command line: lr must be a finite number, got nan"),
    (["--lr", "inf"], "command line: lr must be a finite number, got inf"),
    (["--optimizer", "sgd", "--momentum", "-1"], "command line: momentum must be in [0, 1), got -1.0"),
    (["--momentum", "1"], "momentum must be in [0, 1)"),
    (["--label-smoothing", "1"], "label_smoothing must be in [0, 1)"),
    (["--seed", "-1"], "seed must be between 0 and 4294967295"),
    (["--tta-shift", "9"], "tta_shift must be between 0 and 8"),
])
def test_bad_numbers_on_the_command_line_are_one_line_errors(capsys, flags, message):
    """Refused before any data is read."""
    assert main(["train", "fashion-mnist", *flags, "--quiet"]) == 2
    assert message in error_line(capsys)


def help_text(capsys, command: str) -> str:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    return capsys.readouterr().out


def examples(text: str) -> list[str]:
    """The commands of a --help's example paragraph, without their comments."""
    block = text.split("example:\n", 1)[1].split("\n\n", 1)[0]
    return [line.split("#")[0].strip() for line in block.splitlines()]


def test_train_help_groups_the_flags_by_kind(capsys):
    from torchlab.config import GROUPS

    text = help_text(capsys, "train")
    starts = [text.index(f"\n{title}:\n") for title in GROUPS]
    assert starts == sorted(starts)  # every task, images, language models, then the machine
    section = {title: text[start:end] for title, start, end in zip(GROUPS, starts, [*starts[1:], len(text)])}
    where = {flag: next(t for t, part in section.items() if f"  {flag} " in part or f"  {flag}," in part)
             for flag in ("--epochs", "--lr", "--max-steps", "--data-dir", "--augment", "--model", "--recipe",
                          "--cell", "--corpus", "--bptt", "--precision", "--threads", "--device", "--compile")}
    assert {f for f, t in where.items() if t == GROUPS[0]} == {"--epochs", "--lr", "--max-steps", "--data-dir"}
    assert {f for f, t in where.items() if t == GROUPS[1]} == {"--augment", "--model", "--recipe"}
    assert {f for f, t in where.items() if t == GROUPS[2]} == {"--cell", "--corpus", "--bptt"}
    assert {f for f, t in where.items() if t == GROUPS[3]} == {"--precision", "--threads", "--device", "--compile"}
    assert "(default: 3; lm: 25)" in section[GROUPS[0]]  # a shared flag names both defaults


def test_train_and_generate_help_examples_are_whole_commands_for_each_task(capsys):
    from torchlab.cli import build_parser

    parser = build_parser()
    train = examples(help_text(capsys, "train"))
    assert any(e.startswith("torchlab train fashion-mnist") for e in train)
    assert any(e.startswith("torchlab train lm --corpus") for e in train)
    generate = examples(help_text(capsys, "generate"))
    assert len(generate) == 2 and any("--next 5" in e for e in generate)
    for line in train + generate:
        args = parser.parse_args([a.replace("<run>", "r") for a in shlex.split(line)[1:]])  # parses: runnable
        assert hasattr(args, "func"), line
