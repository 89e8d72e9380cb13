"""The `torchlab` command: sub-commands, and the one place errors become exit codes.

`main(argv)` returns the exit code instead of exiting, so tests call it directly.
A `UserError` prints one line and returns 2; Ctrl-C returns 130; anything
else is a bug and keeps its traceback. `--debug` shows tracebacks for all.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import shlex
import sys
import traceback
from pathlib import Path

from torchlab import __version__, logger, runinfo
from torchlab.config import CONFIGS, LMTrainConfig, TrainConfig, add_flags, check_values, resolve
from torchlab.errors import Interrupted, UserError

IMAGE_TASKS = ("fashion-mnist", "mnist", "cifar10", "image-folder")
TASKS = (*IMAGE_TASKS, "lm")
# The notes' first chapters, one module each under torchlab/tasks/. Each module has
# `add_arguments(parser)` and `run(args) -> int`: (command, module, help, example).
BASICS = (
    ("image", "images", "open images and show them as array (H, W, C) and tensor (C, H, W); log them to TensorBoard",
     "torchlab image photo.jpg --logdir runs/images"),
    ("stats", "stats", "per-channel mean and standard deviation of a dataset's training images (for Normalize)",
     "torchlab stats fashion-mnist   |   torchlab stats image-folder --data-dir DIR"),
    ("autograd", "autograd", "the notes' autograd example step by step, gradients checked by hand",
     "torchlab autograd"),
    ("linreg", "linreg", "fit y = 3x + 0.8 by gradient descent, by hand or with nn.Linear + optim.SGD",
     "torchlab linreg --method manual   |   torchlab linreg --method module"),
    ("conv-viz", "convviz", "run a convolution and max-pooling over images; see every output channel",
     "torchlab conv-viz --dataset fashion-mnist --out runs/conv"),
    ("generate", "generate", "continue a text with a language model from `torchlab train lm`",
     "torchlab generate runs/<run>/best.pt --prompt '天上的云朵' --tokens 50   |   ... --next 5"),
    ("runs", "runs", "list the runs under a folder: task, model, metrics, duration, status, how to resume",
     "torchlab runs runs --sort test   |   torchlab runs --json"),
    ("report", "report", "write one self-contained HTML page about a run: curves, metrics, mistakes or samples",
     "torchlab report runs/<run> --open"),
    ("tensorboard", "board", "start TensorBoard on the runs on a free local port and print its address",
     "torchlab tensorboard runs"),
)
# Settings a resumed run may change: they do not alter the numbers already computed.
RESUMABLE = {"epochs", "device", "threads", "max_steps", "log_every", "eval_batch_size", "data_dir", "test_every_epoch",
             "patience"}


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a UserError: one line, exit 2, like every other bad input."""

    def error(self, message):
        raise UserError(f"{self.prog}: {message}", f"see `{self.prog} --help`")


def cmd_train(args) -> int:
    from torchlab import checkpoint

    names = {f.name for cls in CONFIGS for f in dataclasses.fields(cls)} - {"task"}
    given = {name: getattr(args, name) for name in names if hasattr(args, name)}
    if args.task is not None:
        given["task"] = args.task
    if args.resume:
        if args.config:
            raise UserError("--config cannot be combined with --resume", "a resumed run keeps its saved settings")
        run_dir = Path(args.resume)
        ckpt = checkpoint.load(run_dir / "last.pt" if run_dir.is_dir() else run_dir)
        cfg = resumed_config(ckpt, given)
        summary = run_task(cfg, resume=ckpt, run_dir=Path(ckpt["path"]).parent)
    else:
        if args.task is None and not args.config:
            raise UserError("train: name a task (" + ", ".join(TASKS) + ") or --resume RUN_DIR",
                            "e.g. `torchlab train fashion-mnist`")
        cfg = resolve(given, args.config)
        if cfg.task not in TASKS:
            raise UserError(f"train: unknown task {cfg.task!r}", "choose one of: " + ", ".join(TASKS))
        summary = run_task(cfg)
    from torchlab.distributed import from_env

    if from_env().rank:
        return 0  # rank 0 reports for all processes
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(lm_summary_text(summary) if cfg.task == "lm" else summary_text(summary))
    return 0


def resumed_config(ckpt: dict, given: dict):
    """The saved config, with the few settings that may change on resume (they alter no past numbers)."""
    cls = LMTrainConfig if ckpt["task"] == "lm" else TrainConfig
    saved = cls(**ckpt["train_config"])
    check_values(given, "command line", cls)
    # A language model's eval streams restart from a zero state, so their count changes perplexity a little.
    resumable = RESUMABLE - {"eval_batch_size"} if cls is LMTrainConfig else RESUMABLE
    for key, value in given.items():
        if value != getattr(saved, key) and (key not in resumable or (key == "epochs" and saved.schedule != "constant")):
            raise UserError(f"--{key.replace('_', '-')} cannot change when resuming (the run used {getattr(saved, key)!r})",
                            "start a new run to change it")
    return dataclasses.replace(saved, **given)


def run_task(cfg, resume: dict | None = None, run_dir: Path | None = None) -> dict:
    """Train in this process, or as one of several started by torchrun (see distributed.py)."""
    from torchlab import distributed
    from torchlab.runtime import pick_device

    with distributed.start(pick_device(cfg.device)) as world:
        if not world.main:
            logger.QUIET = True  # rank 0 speaks for all; errors are still printed, with their rank
        if cfg.task == "lm":
            from torchlab.tasks import lm

            return lm.train(cfg, resume=resume, run_dir=run_dir)
        from torchlab.tasks import classify

        return classify.train(cfg, resume=resume, run_dir=run_dir)


def lm_summary_text(s: dict) -> str:
    lines = [f"run {s['run_dir']} {s['status']}: {s['epochs']} epochs, {s['steps']} steps, "
             f"{s['train_seconds']:.1f} s training at {s['tokens_per_second']:.0f} tokens/s"]
    if s.get("best_val_ppl") is not None:
        lines.append(f"best val perplexity {s['best_val_ppl']:.3f} (epoch {s['best_epoch']})")
    lines.append(f"test perplexity {s['test_ppl']:.3f} on {s['test_tokens']} tokens ({s['test_scored']})")
    lines.append(f"checkpoints: {s['run_dir']}/last.pt, best.pt; "
                 f"continue a prompt with: torchlab generate {s['run_dir']}/best.pt --prompt TEXT")
    return "\n".join(lines)


def summary_text(s: dict) -> str:
    lines = [f"run {s['run_dir']} {s['status']}: {s['epochs']} epochs, {s['steps']} steps, "
             f"{s['train_seconds']:.1f} s training at {s['images_per_second']:.0f} img/s"]
    if s.get("best_val_acc") is not None:
        lines.append(f"best val accuracy {s['best_val_acc']:.2%} (epoch {s['best_epoch']})")
    split = s.get("scored_split", "test")
    lines.append(f"{split} accuracy {s[split + '_acc']:.2%} on {s[split + '_count']} images ({s[split + '_scored']})"
                 + ("; no test split, so this is the set the best epoch was chosen on" if split == "val" else ""))
    lines.append(f"checkpoints: {s['run_dir']}/last.pt, best.pt; TensorBoard: tensorboard --logdir {s['run_dir']}")
    return "\n".join(lines)


def cmd_eval(args) -> int:
    from torchlab import checkpoint
    from torchlab.tasks import predict

    ckpt = checkpoint.load(args.checkpoint)
    if args.corruptions:
        return corruption_eval(ckpt, args)
    result = predict.evaluate_checkpoint(ckpt, args.data_dir, args.device, args.batch_size, args.out)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "confusion"} | {"confusion": result["confusion"].tolist()}, indent=2))
    else:
        print(predict.eval_text(result))
    return 0


def corruption_eval(ckpt: dict, args) -> int:
    from torchlab.tasks import robustness

    result = robustness.corruption_table(ckpt, args.data_dir, args.device, args.images, args.seed,
                                         photo_options(args))
    result["test_acc"] = robustness.full_test_accuracy(ckpt, args.data_dir, args.device)
    print(json.dumps(result, indent=2) if args.json else robustness.table_text(result))
    return 0


def photo_options(args):
    from torchlab.data.photo import PhotoOptions

    return PhotoOptions(invert=args.invert, levels=not args.no_levels, denoise=not args.no_denoise,
                        frame=not args.no_frame)


def add_photo_flags(p) -> None:
    """How predict (and eval --corruptions) make a photo look like the dataset's images (data/photo.py)."""
    p.add_argument("--invert", default="auto", choices=["auto", "yes", "no"],
                   help="make the item light on dark (auto: when the background is lighter than the item)")
    p.add_argument("--no-levels", action="store_true",
                   help="keep the photo's levels (default: background to black, the item's brightest part to white)")
    p.add_argument("--no-denoise", action="store_true",
                   help="keep the photo's grain (default: a 3x3 median filter where the background is noisy)")
    p.add_argument("--no-frame", action="store_true",
                   help="keep the photo's framing (default: trim to the item and frame it as the dataset did)")


def cmd_predict(args) -> int:
    from torchlab import checkpoint
    from torchlab.runtime import pick_device
    from torchlab.tasks import predict

    if args.top_k < 1:
        raise UserError(f"--top-k {args.top_k}: must be at least 1", "e.g. --top-k 3")
    ckpt = checkpoint.load(args.checkpoint)
    results = predict.predict_paths(ckpt, args.images, pick_device(args.device), args.top_k, photo_options(args),
                                    args.show)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        print(r["image"] + ": " + ", ".join(f"{t['class']} {t['prob']:.1%}" for t in r["top"])
              + predict.steps_text(r["preprocessing"]))
    if args.show:
        print(f"model input{'s' if len(results) > 1 else ''} saved to {args.show}")
    return 0


def cmd_models(args) -> int:
    from torchlab.models.registry import MODELS, build_model, count_macs, count_params, model_config

    rows = []
    for name, entry in MODELS.items():
        model = build_model(name, model_config(name))  # sized for 1x28x28 inputs and 10 classes
        rows.append({"name": name, "params": count_params(model), "macs": count_macs(model, (1, 28, 28)),
                     "description": entry.description})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    w = max(len(r["name"]) for r in rows)
    print(f"{'model':<{w}} {'params':>9} {'MACs/image':>12}  description (for 1x28x28 inputs, 10 classes)")
    for r in rows:
        print(f"{r['name']:<{w}} {r['params']:>9,} {r['macs']:>12,}  {r['description']}")
    return 0


def cmd_data(args) -> int:
    from torchlab.data import catalog

    for name in args.names or ["fashion-mnist", "mnist"]:
        d = catalog.load(name, args.data_dir, offline=args.offline)
        counts = " + ".join(f"{len(split)} {split_name}" for split_name, split in
                           (("train", d.train), ("val", d.val), ("test", d.test)) if split is not None)
        print(f"{name}: {counts} images {tuple(d.train.images.shape[1:])}, {len(d.classes)} classes, "
              f"checked, from {d.source}")
    return 0


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")
    p.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress output, results only")


def subparser(subs, name: str, help: str, example: str) -> argparse.ArgumentParser:
    p = subs.add_parser(name, help=help, description=f"{help}\n\nexample:\n  {example}",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="torchlab", description="A small deep-learning workbench built from a learner's PyTorch notes.")
    parser.add_argument("--version", action="version", version=f"torchlab {__version__}")
    add_common(parser)
    subs = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    p = subparser(subs, "train", "train a classifier (writes logs and checkpoints to a run directory)",
                  "torchlab train fashion-mnist --epochs 3   |   torchlab train fashion-mnist --recipe strong")
    p.add_argument("task", nargs="?", choices=TASKS, help="dataset to train on")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted or finished run from its last.pt")
    p.add_argument("--config", metavar="FILE.toml", help="read settings from a TOML file (flags still win)")
    p.add_argument("--json", action="store_true", help="print the final summary as JSON")
    add_flags(p)
    p.set_defaults(func=cmd_train)

    p = subparser(subs, "eval", "score a checkpoint on its test set: accuracy, per-class accuracy, confusion matrix",
                  "torchlab eval runs/my-run/best.pt --out confusion.png   |   torchlab eval runs/my-run/best.pt --corruptions")
    p.add_argument("checkpoint", help="a .pt file (or run directory) from `torchlab train`")
    p.add_argument("--data-dir", help="folder holding the dataset files")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--batch-size", type=int, default=1000, help="images per step (does not change results)")
    p.add_argument("--out", help="where to write the confusion matrix PNG (default: beside the checkpoint)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    group = p.add_argument_group("corruptions (grayscale datasets)")
    group.add_argument("--corruptions", action="store_true",
                       help="instead: accuracy on test images corrupted as photos are (blur, noise, JPEG, paper, "
                            "rotation, ...; 3 severities each), read the way `predict` reads a photo")
    group.add_argument("--images", type=int, default=1000, help="test images sampled for --corruptions")
    group.add_argument("--seed", type=int, default=0, help="seed of the sample and the corruptions")
    add_photo_flags(group)
    p.set_defaults(func=cmd_eval)

    p = subparser(subs, "predict", "classify image files with a trained checkpoint",
                  "torchlab predict runs/my-run/best.pt shoe.jpg shirt.png --top-k 3 --show seen.png")
    p.add_argument("checkpoint", help="a .pt file (or run directory) from `torchlab train`")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="PNG, JPEG, BMP or GIF files, any size and mode")
    p.add_argument("--top-k", type=int, default=3, help="how many classes to show per image")
    add_photo_flags(p)
    p.add_argument("--show", metavar="OUT.png", help="save the model-sized input(s) the model saw, side by side")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_predict)

    for command, module, help, example in BASICS:
        task = importlib.import_module(f"torchlab.tasks.{module}")
        p = subparser(subs, command, help, example)
        task.add_arguments(p)
        p.set_defaults(func=task.run)

    from torchlab import doctor

    p = subparser(subs, "doctor", "what this machine is and what torchlab will do on it: devices, CPU features, "
                  "measured rates, the settings auto picks and why, datasets, tools",
                  "torchlab doctor   |   torchlab doctor --json   |   torchlab doctor --measure")
    doctor.add_arguments(p)
    p.set_defaults(func=doctor.run)

    p = subparser(subs, "models", "list the models with parameter counts and multiply-adds per image", "torchlab models")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.set_defaults(func=cmd_models)

    p = subparser(subs, "data", "find and check the datasets (no download with --offline)",
                  "torchlab data fashion-mnist --data-dir ../shared/data")
    p.add_argument("names", nargs="*", choices=[[], *IMAGE_TASKS], metavar="NAME",
                   help=", ".join(IMAGE_TASKS) + " (default: fashion-mnist, mnist)")
    p.add_argument("--data-dir", help="folder holding the dataset files")
    p.add_argument("--offline", action="store_true", help="only look on disk, never download")
    p.set_defaults(func=cmd_data)
    return parser


def rank_tag() -> str:
    """" (rank N)" in messages of a process started by torchrun, so a failure names its process."""
    from torchlab.distributed import from_env

    world = from_env()
    return f" (rank {world.rank})" if world.enabled else ""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    logger.QUIET = "--quiet" in argv
    runinfo.COMMAND = "torchlab " + shlex.join(argv)  # kept in each run's summary.json
    try:
        args = build_parser().parse_args(argv)
        if not hasattr(args, "func"):
            build_parser().print_help()
            return 2
        return args.func(args)
    except UserError as e:
        if debug:
            traceback.print_exc()
        print(f"torchlab{rank_tag()}: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"torchlab{rank_tag()}: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("torchlab: interrupted", file=sys.stderr)
        return 130
