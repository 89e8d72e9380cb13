"""The training configuration: the dataclasses, their command-line flags, TOML files, checks and resuming.

Values are resolved in this order, later winning: the dataclass defaults, the task's own defaults
(recipes.TASK_DEFAULTS), the chosen `--recipe` (recipes.py), the `--config FILE.toml`, then flags given on
the command line.

Each field's metadata says all there is to check about it: its type (that of the default), choices, bounds,
and whether a resumed run may change it. `check_values` and `resumed` read only that, so a new setting
needs a field and no code of its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

from torchlab.checks import violation
from torchlab.errors import UserError
from torchlab.i18n import N_, _
from torchlab.recipes import RECIPES, TASK_DEFAULTS, recipe_values

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    try:
        import tomli as tomllib
    except ModuleNotFoundError:  # a bare machine (benchmarks/gpu.sh): only --config needs it
        tomllib = None

# Whether `--resume` may change a setting: yes, no, or a test of the saved config.
Resumable = Union[bool, Callable[[Any], bool]]


def opt(default, help: str, choices=None, flag: bool = True, *, lo=None, hi=None, hi_open: bool = False,
        resumable: Resumable = False, hint: str = N_("fix the value")):
    """A setting: its default, help text and what `check_values` enforces. Values must lie in [lo, hi]
    ([lo, hi) with `hi_open`; either bound may be None), floats must be finite. `resumable`: see
    `resumed`. `hint` ends the one-line error for a value out of bounds."""
    return field(default=default, metadata={"help": help, "choices": choices, "flag": flag, "lo": lo, "hi": hi,
                                            "hi_open": hi_open, "resumable": resumable, "hint": hint})


def constant_schedule(saved) -> bool:
    """More epochs may follow only a constant rate: other schedules were laid out over the saved epochs."""
    return saved.schedule == "constant"


# Where a fraction makes no sense at 1 (all dropped, all averaged, all held out), the bound is open.
FRACTION = {"lo": 0, "hi": 1, "hi_open": True}


@dataclass
class RunConfig:
    """The settings every training run has. Defaults and help are image classification's (the notes'
    Fashion-MNIST settings), which `torchlab train --help` shows; LMTrainConfig changes some with `like`."""

    task: str = opt("fashion-mnist", N_("dataset to train on"), flag=False)
    epochs: int = opt(3, N_("passes over the training split"), lo=1, resumable=constant_schedule)
    batch_size: int = opt(64, N_("training images per step (lm: parallel text streams)"), lo=1)
    # 256: on a 2-core EPYC Zen 3, chunks of 128-256 score 1.3-2x faster than chunks of 1000, whose
    # activations (1000 x 32 x 26 x 26 floats = 87 MB) no longer fit in the caches.
    eval_batch_size: int = opt(256, N_("images per step when evaluating (does not change results)"), lo=1,
                               resumable=True)
    optimizer: str = opt("adam", N_("update rule"), ["sgd", "adam", "adamw"])
    lr: float = opt(1e-3, N_("learning rate (the peak rate for one-cycle)"), lo=0)
    momentum: float = opt(0.9, N_("momentum for sgd (Nesterov)"), **FRACTION, hint=N_("e.g. 0.9, or 0 for none"))
    weight_decay: float = opt(0.0, N_("L2 penalty (decoupled for adamw)"), lo=0)
    schedule: str = opt("constant", N_("learning-rate schedule over all steps"), ["constant", "cosine", "onecycle"])
    ema: float = opt(0.0, N_("validate, keep and test an exponential moving average of the weights with this "
                          "decay per step, e.g. 0.999 (0: off)"), **FRACTION, hint=N_("e.g. 0.99, or 0 for no average"))
    precision: str = opt("auto", N_("arithmetic for forward passes (bf16 autocast changes numbers; auto: whichever "
                                 "trains faster here, measured; bf16 is never tried where it is emulated)"),
                         ["fp32", "bf16", "auto"])
    threads: int = opt(0, N_("CPU threads (0: auto, the fastest measured here)"), lo=0, resumable=True)
    patience: int = opt(0, N_("stop after this many epochs without a better val accuracy (0: never)"), lo=0,
                        resumable=True)
    # 2**32 - 1: the largest seed every generator takes (NumPy's are 32-bit).
    seed: int = opt(0, N_("seed for the split, initial weights, batch order and augmentation"), lo=0, hi=2**32 - 1)
    device: str = opt("auto", N_("auto picks cuda, then mps, then cpu"), ["auto", "cpu", "cuda", "mps"],
                      resumable=True)
    max_steps: int = opt(0, N_("stop after this many training steps (0: no limit); for quick dry runs"), lo=0,
                         resumable=True)
    log_every: int = opt(50, N_("steps between loss readings (each one syncs with the device)"), lo=1, resumable=True)
    data_dir: str = opt("", N_("folder holding the dataset files (see `torchlab data`)"), resumable=True)
    run_dir: str = opt("", N_("where logs and checkpoints go (default: runs/TASK-MODEL-TIME)"))


def like(name: str, default=MISSING, help: str | None = None, **changes):
    """RunConfig's field `name` with another default, help or other metadata; bounds and the rest stay."""
    base = RunConfig.__dataclass_fields__[name]
    metadata = {**base.metadata, **changes, **({"help": help} if help else {})}
    return field(default=base.default if default is MISSING else default, metadata=metadata)


@dataclass
class TrainConfig(RunConfig):
    """`torchlab train fashion-mnist|mnist|cifar10|image-folder`: image classification."""

    recipe: str = opt("notes", N_("named preset of the settings below"), list(RECIPES))
    target: int = opt(94, N_("--recipe fast: the Fashion-MNIST test accuracy (%%) to reach in the least time"),
                      [91, 93, 94])
    model: str = opt("notes-cnn", N_("network (see `torchlab models`)"))
    label_smoothing: float = opt(0.0, N_("cross-entropy label smoothing"), **FRACTION, hint=N_("e.g. 0.1"))
    augment: bool = opt(False, N_("random 2-pixel shifts (and flips where labels allow) while training"))
    erase: float = opt(0.0, N_("with --augment: chance of blanking a random rectangle of each training image "
                            "(random erasing)"), **FRACTION, hint=N_("e.g. 0.3"))
    photo: float = opt(0.0, N_("train on photo-like changes at this strength, what predict's preprocessing cannot "
                            "fully undo (1: a turn of up to 15 degrees refitted to the frame, a zoom-in of up to 25%%, "
                            "blur up to sigma 1 and noise up to sigma 0.08 on half the images each; 0: off; not for "
                            "image-folder)"), lo=0, hi=2, hint=N_("e.g. 1, or 0 for none"))
    tta: bool = opt(False, N_("average predictions over the image and its mirror when evaluating"))
    tta_shift: int = opt(0, N_("when evaluating, also score each image moved this many pixels diagonally, both "
                            "ways (a quarter of the vote each; 0: off); pays when training shifted the images"),
                         lo=0, hi=8, hint=N_("e.g. 1"))
    channels_last: str = opt("auto", N_("NHWC memory layout for convolutions (auto: whichever trains faster here, "
                                     "measured)"), ["auto", "on", "off"])
    compile: str = opt("auto", N_("torch.compile the model (auto: on where it measured faster, compile time "
                               "included, for runs long enough to win it back)"), ["auto", "on", "off"])
    val_size: int = opt(5000, N_("training images held out for validation (0: none; image-folder: see --val-fraction)"),
                        lo=0)
    val_fraction: float = opt(0.2, N_("image-folder without a val/ sub-folder: share of each class held out (0: none)"),
                              **FRACTION, hint=N_("e.g. 0.2"))
    image_size: int = opt(96, N_("image-folder: side in pixels of the square crops the model sees"), lo=8, hi=1024,
                          hint=N_("e.g. 64"))
    test_every_epoch: bool = opt(False, N_("also score the test set after every epoch (for time-to-accuracy)"),
                                 resumable=True)


@dataclass
class LMTrainConfig(RunConfig):
    """`torchlab train lm`: a recurrent language model trained with truncated back-propagation through time."""

    task: str = like("task", "lm", N_("always lm"))
    corpus: str = opt("timemachine", N_("timemachine, tang, or the path of a text file"))
    level: str = opt("char", N_("tokens: characters, or words with punctuation split off (Chinese: always characters)"),
                     ["char", "word"])
    script: str = opt("simplified",
                      N_("tang: convert to simplified characters with OpenCC, or keep the traditional ones"),
                      ["simplified", "traditional"])
    encoding: str = opt("utf-8", N_("encoding of a corpus file (e.g. gb18030, latin-1)"))
    cell: str = opt("lstm", N_("recurrent cell"), ["rnn", "lstm", "gru"])
    impl: str = opt("torch", N_("torch: PyTorch's fused layers; scratch: torchlab's cells written from the equations"),
                    ["torch", "scratch"])
    embed_size: int = opt(256, N_("size of the token embeddings"), lo=1)
    hidden_size: int = opt(512, N_("size of the hidden state of each layer"), lo=1)
    layers: int = opt(2, N_("stacked recurrent layers"), lo=1)
    dropout: float = opt(0.5, N_("dropout between layers and before the output layer"), **FRACTION, hint=N_("e.g. 0.3"))
    embed_dropout: float = opt(0.2, N_("dropout on the token embeddings"), **FRACTION, hint=N_("e.g. 0.3"))
    weight_drop: float = opt(0.3, N_("drop this fraction of the hidden-to-hidden weights in each training window "
                                  "(DropConnect, as in AWD-LSTM)"), **FRACTION, hint=N_("e.g. 0.3"))
    tie: bool = opt(False, N_("share the output layer's weights with the embedding (needs embed size = hidden size)"))
    bptt: int = opt(64, N_("tokens per window of truncated back-propagation through time"), lo=1)
    clip: float = opt(1.0, N_("clip the gradient norm to this (0: no clipping)"), lo=0)
    ema: float = like("ema", help=N_("validate, keep and test an exponential moving average of the weights with this "
                                  "decay per step, e.g. 0.99 (0: off)"))
    epochs: int = like("epochs", 25, N_("passes over the training text"))  # timemachine: val flat after epoch ~21 of 30
    batch_size: int = like("batch_size", 32, N_("parallel text streams per step"))
    # Not resumable: each eval stream starts from a zero state, so their count changes perplexity a little.
    eval_batch_size: int = like("eval_batch_size", 16, N_("parallel streams when evaluating (every token is scored "
                                "once; each stream starts from a zero state, so this shifts perplexity slightly)"),
                                resumable=False)
    optimizer: str = like("optimizer", "adamw")
    lr: float = like("lr", 3e-3)
    weight_decay: float = like("weight_decay", 0.1)
    schedule: str = like("schedule", "cosine")
    precision: str = like("precision", help=N_("arithmetic for forward passes (auto: whichever trains faster here, "
                                            "measured; bf16 is never tried where it is emulated)"))
    patience: int = like("patience", help=N_("stop after this many epochs without a better val perplexity (0: never)"))
    seed: int = like("seed", help=N_("seed for the split of multi-document corpora, initial weights, window offsets, "
                                  "dropout"))
    data_dir: str = like("data_dir", help=N_("folder holding the corpus (see `torchlab train --help`)"))
    run_dir: str = like("run_dir", help=N_("where logs and checkpoints go (default: runs/lm-CORPUS-CELL-TIME)"))


CONFIGS = (TrainConfig, LMTrainConfig)


def config_class(task: str) -> type:
    """The dataclass of a task's settings."""
    return LMTrainConfig if task == "lm" else TrainConfig


# `torchlab train --help` groups the flags by kind; settings of the machine, not of the model, go last.
RUNTIME = ("device", "precision", "channels_last", "compile", "threads")
GROUPS = (N_("every task"), N_("images (fashion-mnist, mnist, cifar10, image-folder)"),
          N_("language models (train lm)"), N_("hardware and runtime (auto: measured on this machine)"))


def flag_group(name: str) -> str:
    """Which of GROUPS a setting's flag is listed under."""
    if name in RUNTIME:
        return GROUPS[3]
    if name in RunConfig.__dataclass_fields__:
        return GROUPS[0]
    return GROUPS[1] if name in TrainConfig.__dataclass_fields__ else GROUPS[2]


def add_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per field of TrainConfig and LMTrainConfig (shared names once), grouped by kind (GROUPS);
    unset flags stay absent, so they override neither TOML files nor recipes."""
    groups = {title: parser.add_argument_group(_(title)) for title in GROUPS}
    lm_defaults = {f.name: f.default for f in dataclasses.fields(LMTrainConfig)}
    fields = {f.name: f for cls in (RunConfig, *CONFIGS) for f in dataclasses.fields(cls)}
    for name, f in fields.items():  # RunConfig's first, in their order; then each task's own
        f = TrainConfig.__dataclass_fields__.get(name, f)  # shared settings show the image defaults and help
        if f.metadata["flag"]:
            add_flag(groups[flag_group(name)], f, lm_defaults.get(name, f.default))


FIND = "find"  # `train --lr find`: the lr range test picks the rate (lrfind.py); never a config value


def lr_flag(text: str):
    """--lr: a number, or FIND (api.train takes it; anywhere else it fails the float check)."""
    return FIND if text == FIND else float(text)


lr_flag.__name__ = "float"  # argparse's message for a bad value: "invalid float value"


def add_flag(group, f: dataclasses.Field, lm_default) -> None:
    name = "--" + f.name.replace("_", "-")
    also = _("; lm: {default}").format(default=lm_default) if lm_default != f.default else ""
    helptext = _(f.metadata["help"]) + (_(" (default: {default}{lm})").format(default=f.default, lm=also)
                                        if f.default != "" else "")  # "": none
    if isinstance(f.default, bool):
        group.add_argument(name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=helptext)
        return
    choices = f.metadata["choices"]
    kind = lr_flag if f.name == "lr" else type(f.default)
    group.add_argument(name, type=kind, choices=choices, default=argparse.SUPPRESS,
                       metavar=f.name.upper() if not choices else None, help=helptext)


def load_toml(path: str) -> dict[str, Any]:
    if tomllib is None:  # pragma: no cover
        raise UserError(_("--config {path}: reading TOML needs Python 3.11 or the tomli package").format(path=path),
                        _("pip install tomli"))
    try:
        with open(path, "rb") as fh:
            values = tomllib.load(fh)
    except OSError as e:
        raise UserError(_("--config {path}: cannot read ({reason})").format(path=path, reason=e.strerror),
                        _("check the path")) from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(_("--config {path}: not valid TOML ({reason})").format(path=path, reason=e),
                        _("fix the file")) from None
    return {k.replace("-", "_"): v for k, v in values.items()}


def check_values(values: dict[str, Any], origin: str, cls: type = TrainConfig) -> None:
    """Reject unknown keys, and values of the wrong type, outside their choices or outside their bounds."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in values.items():
        if key not in fields:
            other = any(key in c.__dataclass_fields__ for c in CONFIGS if c is not cls)
            which = _("language models (train lm)") if cls is LMTrainConfig else _("image classification")
            raise UserError(_("{origin}: {key} is not a setting for {which}").format(origin=origin, key=repr(key),
                                                                                      which=which) if other else
                            _("{origin}: unknown setting {key}").format(origin=origin, key=repr(key)),
                            _("see `torchlab train --help` for the keys"))
        check_value(fields[key], value, origin)


def check_value(f: dataclasses.Field, value: Any, origin: str) -> None:
    """One value against its field's type, choices and bounds (see `opt`)."""
    meta, kind = f.metadata, type(f.default)
    if not of_kind(value, kind):
        raise UserError(_("{origin}: {name} must be {kind}, got {value}").format(
            origin=origin, name=f.name, kind=kind.__name__, value=repr(value)), _("fix the value"))
    choices = meta["choices"]
    if choices and value not in choices:
        raise UserError(_("{origin}: {name} must be one of {choices}, got {value}").format(
            origin=origin, name=f.name, choices=", ".join(map(str, choices)), value=repr(value)), _("fix the value"))
    if kind in (int, float) and (need := violation(value, meta["lo"], meta["hi"], hi_open=meta["hi_open"])):
        rule = _("must not be negative") if need == _("0 or more") else _("must be {need}").format(need=need)
        raise UserError(_("{origin}: {name} {rule}, got {value}").format(origin=origin, name=f.name, rule=rule,
                                                                         value=repr(value)), _(meta["hint"]))


def of_kind(value: Any, kind: type) -> bool:
    """isinstance, except that bools are no numbers (TOML's `epochs = true` is a mistake, not 1 epoch) and
    ints are floats too (`lr = 1`)."""
    if isinstance(value, bool) or kind is bool:
        return type(value) is kind
    return isinstance(value, kind) or (kind is float and isinstance(value, int))


def resolve(cli: dict[str, Any], toml_path: str | None = None):
    """Defaults < task defaults < recipe < TOML file < command-line flags; returns TrainConfig or LMTrainConfig.

    The config's `explicit` attribute (not a field: never saved) names the settings the file and the flags
    gave, so that a task may adapt a default that cannot work (a batch larger than a small training set)
    while a value the user chose stays an error."""
    file_values = load_toml(toml_path) if toml_path else {}
    task = cli.get("task", file_values.get("task", TrainConfig.task))
    cls = config_class(task)
    check_values(file_values, f"--config {toml_path}", cls)
    check_values(cli, "command line", cls)
    if cls is LMTrainConfig:
        cfg = LMTrainConfig(**{**file_values, **cli})
    else:
        recipe = cli.get("recipe", file_values.get("recipe", "notes"))
        device = cli.get("device", file_values.get("device", "auto"))
        target = cli.get("target", file_values.get("target", TrainConfig.target))
        cfg = TrainConfig(**{**TASK_DEFAULTS.get(task, {}), **recipe_values(recipe, device, target), **file_values,
                             **cli, "recipe": recipe})
    cfg.explicit = frozenset(file_values) | frozenset(cli)
    return cfg


def resumed(task: str, saved: dict[str, Any], given: dict[str, Any]):
    """The config a resumed run continues with: the saved one (`dataclasses.asdict` of it, from the
    checkpoint) with the command-line values `given`. Only settings that alter no number already computed
    may change (their metadata's `resumable`); any other change is refused."""
    cls = config_class(task)
    cfg = cls(**saved)
    check_values(given, "command line", cls)
    fields = cls.__dataclass_fields__
    for key, value in given.items():
        old = getattr(cfg, key)
        allowed = fields[key].metadata["resumable"]
        if value != old and not (allowed(cfg) if callable(allowed) else allowed):
            raise UserError(_("--{flag} cannot change when resuming (the run used {old})").format(
                flag=key.replace("_", "-"), old=repr(old)), _("start a new run to change it"))
    return dataclasses.replace(cfg, **given)


def save_toml(cfg, path: Path) -> None:
    """Write the resolved config so `--config` can replay the run."""
    path.write_text(toml_text(dataclasses.asdict(cfg)))


def toml_text(values: dict[str, Any]) -> str:
    """Settings as the TOML that `--config` reads (also tune's best.toml)."""
    lines = []
    for key, value in values.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {str(value).lower()}")
        elif isinstance(value, str):
            lines.append(f"{key} = {json.dumps(value)}")
        else:
            lines.append(f"{key} = {value!r}")
    return "\n".join(lines) + "\n"
