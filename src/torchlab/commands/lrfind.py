"""`torchlab lr-find TASK [train flags] [--start 1e-7] [--end 10] [--steps 200]`: the learning-rate range test.

Takes every flag `torchlab train` takes, builds what that run would train, and sweeps the lr on it
(torchlab/lrfind.py); prints the suggestion and writes the curve into a folder of its own.
"""

from __future__ import annotations

import json

from torchlab.checks import Bounded
from torchlab.commands.train import TASKS, given_settings
from torchlab.config import FIND, add_flags
from torchlab.i18n import _


def add_arguments(p) -> None:
    p.usage = "%(prog)s TASK [--start LR] [--end LR] [--steps N] [--config FILE.toml] [--json] [--FLAG VALUE ...]"
    p.add_argument("task", choices=TASKS, help=_("dataset to train on, or lm for a language model"))
    p.add_argument("--start", type=float, default=1e-7, action=Bounded, lo=0, lo_open=True,
                   help=_("the sweep's first learning rate (default: %(default)s)"))
    p.add_argument("--end", type=float, default=10.0, action=Bounded, lo=0, lo_open=True,
                   help=_("the sweep's last learning rate; it stops earlier once the loss diverges "
                          "(default: %(default)s)"))
    p.add_argument("--steps", type=int, default=200, action=Bounded, lo=10,
                   help=_("optimizer steps, one per batch (default: %(default)s)"))
    p.add_argument("--config", metavar="FILE.toml", help=_("read settings from a TOML file (flags still win)"))
    p.add_argument("--json", action="store_true", help=_("print the result as JSON"))
    add_flags(p)  # every `torchlab train` flag: the sweep runs on what that run would train


def run(args) -> int:
    from torchlab import logger, lrfind

    settings = {k: v for k, v in given_settings(args).items() if not (k == "lr" and v == FIND)}  # swept anyway
    span = lrfind.Range(args.start, args.end, args.steps)
    s, folder = lrfind.find(args.task, settings, args.config, span, quiet=logger.QUIET)
    if args.json:
        print(json.dumps({"run_dir": str(folder), **s.record()}, indent=2))
        return 0
    stopped = (_("stopped after {steps} of {planned} steps: the loss diverged").format(steps=len(s.lrs),
                                                                                        planned=s.planned)
               if s.diverged else _("{steps} steps").format(steps=len(s.lrs)))
    print(_("lr find on {task}: lr {start} to {end}, {stopped}").format(
        task=args.task, start=f"{s.lrs[0]:.3g}", end=f"{s.lrs[-1]:.3g}", stopped=stopped))
    print(lrfind.suggestion_text(s))
    print(_("curve: {folder}/lr_find.png, lr_find.json; TensorBoard: torchlab tensorboard {folder}; train with: "
            "torchlab train {task} --lr {lr}").format(folder=folder, task=args.task, lr=f"{s.suggestion:.3g}"))
    return 0
