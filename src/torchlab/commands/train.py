"""`torchlab train TASK` and `torchlab train --resume RUN_DIR`: one run, from flags, a TOML file and a recipe."""

from __future__ import annotations

import dataclasses
import json

from torchlab.config import CONFIGS, add_flags
from torchlab.data.catalog import NAMES

TASKS = (*NAMES, "lm")  # as api.TASKS, whose import would load torch for `--help`


def add_arguments(p) -> None:
    p.add_argument("task", nargs="?", choices=TASKS, help="dataset to train on, or lm for a language model")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted or finished run from its last.pt")
    p.add_argument("--config", metavar="FILE.toml", help="read settings from a TOML file (flags still win)")
    p.add_argument("--json", action="store_true", help="print the final summary as JSON")
    add_flags(p)


def run(args) -> int:
    from torchlab import api
    from torchlab.distributed import from_env

    names = {f.name for cls in CONFIGS for f in dataclasses.fields(cls)} - {"task"}
    given = {name: getattr(args, name) for name in names if hasattr(args, name)}
    summary = api.train(args.task, config=args.config, resume=args.resume, **given).summary
    if from_env().rank:
        return 0  # rank 0 reports for all processes
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(lm_summary_text(summary) if summary["task"] == "lm" else summary_text(summary))
    return 0


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
