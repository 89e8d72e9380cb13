"""`torchlab train TASK` and `torchlab train --resume RUN_DIR`: one run, from flags, a TOML file and a recipe."""

from __future__ import annotations

import dataclasses
import json

from torchlab import runinfo
from torchlab.config import CONFIGS, add_flags
from torchlab.data.catalog import NAMES
from torchlab.i18n import _

TASKS = (*NAMES, "lm")  # as api.TASKS, whose import would load torch for `--help`


def add_arguments(p) -> None:
    p.usage = "%(prog)s [TASK | --resume RUN_DIR] [--config FILE.toml] [--json] [--FLAG VALUE ...]"  # flags below
    p.add_argument("task", nargs="?", choices=TASKS, help=_("dataset to train on, or lm for a language model"))
    p.add_argument("--resume", metavar="RUN_DIR",
                   help=_("continue a run from its last.pt (add --max-steps 0 to finish a --max-steps run)"))
    p.add_argument("--config", metavar="FILE.toml", help=_("read settings from a TOML file (flags still win)"))
    p.add_argument("--json", action="store_true", help=_("print the final summary as JSON"))
    add_flags(p)


def run(args) -> int:
    from torchlab import api
    from torchlab.distributed import from_env

    summary = api.train(args.task, config=args.config, resume=args.resume, **given_settings(args)).summary
    if from_env().rank:
        return 0  # rank 0 reports for all processes
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(lm_summary_text(summary) if summary["task"] == "lm" else summary_text(summary))
    return 0


def given_settings(args) -> dict:
    """The settings whose flags were given (unset flags are absent from `args`); lr may be config.FIND."""
    names = {f.name for cls in CONFIGS for f in dataclasses.fields(cls)} - {"task"}
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


def head(s: dict, rate: str) -> str:
    """The first line: how the run ended, the epochs (a partial one as a fraction), steps and speed."""
    return _("run {run_dir} {status}: {epochs} epochs, {steps} steps, {seconds} s training at {rate}").format(
        run_dir=s["run_dir"], status=s["status"], epochs=runinfo.epochs_text(s), steps=s["steps"],
        seconds=f"{s['train_seconds']:.1f}", rate=rate)


def closing(s: dict, use: str) -> list[str]:
    """Where the results are and what to do next. The TensorBoard hint names torchlab's own command: the
    `tensorboard` program is on the PATH only while the virtual environment is active."""
    lines = [_("checkpoints: {run_dir}/last.pt, best.pt; {use}; TensorBoard: torchlab tensorboard {run_dir}").format(
        run_dir=s["run_dir"], use=use)]
    if s["status"] == "max-steps":
        lines.append(_("stopped by --max-steps; finish it with: torchlab train --resume {run_dir} --max-steps 0")
                     .format(run_dir=s["run_dir"]))
    return lines


def lm_summary_text(s: dict) -> str:
    lines = [head(s, _("{rate} tokens/s").format(rate=f"{s['tokens_per_second']:.0f}"))]
    if s.get("best_val_ppl") is not None:
        lines.append(_("best val perplexity {ppl} (epoch {epoch})").format(ppl=f"{s['best_val_ppl']:.3f}",
                                                                           epoch=s["best_epoch"]))
    lines.append(_("test perplexity {ppl} on {tokens} tokens ({scored})").format(
        ppl=f"{s['test_ppl']:.3f}", tokens=s["test_tokens"], scored=runinfo.scored_text(s, "test")))
    return "\n".join(lines + closing(s, _("continue a prompt with: torchlab generate {run_dir}/best.pt --prompt TEXT")
                                     .format(run_dir=s["run_dir"])))


def summary_text(s: dict) -> str:
    lines = [head(s, _("{rate} img/s").format(rate=f"{s['images_per_second']:.0f}"))]
    if s.get("best_val_acc") is not None:
        lines.append(_("best val accuracy {acc} (epoch {epoch})").format(acc=f"{s['best_val_acc']:.2%}",
                                                                         epoch=s["best_epoch"]))
    split = s.get("scored_split", "test")
    lines.append(_("{split} accuracy {acc} on {images} images ({scored})").format(
        split=split, acc=f"{s[split + '_acc']:.2%}", images=s[split + "_count"], scored=runinfo.scored_text(s, split))
        + (_("; no test split, so this is the set the best epoch was chosen on") if split == "val" else ""))
    return "\n".join(lines + closing(s, _("classify photos with: torchlab predict {run_dir}/best.pt IMAGE").format(
        run_dir=s["run_dir"])))
