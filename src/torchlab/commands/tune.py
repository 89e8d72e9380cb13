"""`torchlab tune TASK --trials N [--param NAME=LOW:HIGH[:log] | --param NAME=a,b,c ...] [train flags]`.

Takes every flag `torchlab train` takes (fixed in every trial) and searches the --param settings with Optuna
(torchlab/tune.py); prints the trials and the best one as a `torchlab train` command and a TOML file.
"""

from __future__ import annotations

from torchlab.checks import Bounded
from torchlab.commands.train import TASKS, given_settings
from torchlab.config import add_flags
from torchlab.i18n import _
from torchlab.tune import DEFAULT_SPACE


def add_arguments(p) -> None:
    p.usage = ("%(prog)s TASK --trials N [--param NAME=LOW:HIGH[:log] | --param NAME=a,b,c ...] [--study-dir DIR] "
               "[--storage URL] [--study-name NAME] [--config FILE.toml] [--FLAG VALUE ...]")
    p.add_argument("task", choices=TASKS, help=_("dataset to train on, or lm for a language model"))
    p.add_argument("--trials", type=int, required=True, action=Bounded, lo=1,
                   help=_("stop when the study holds this many complete or pruned trials, those of earlier "
                          "commands and other processes included"))
    p.add_argument("--param", action="append", default=[], metavar="NAME=SPACE",
                   help=_("a setting to search (repeatable): NAME=LOW:HIGH (uniform; ints stay ints), "
                          "NAME=LOW:HIGH:log (log-uniform) or NAME=a,b,c (one of these); NAME is a train flag "
                          "without dashes. Default: {images} for images, {lm} for lm, less the settings given "
                          "as flags").format(images=" ".join(DEFAULT_SPACE["images"]), lm=" ".join(DEFAULT_SPACE["lm"])))
    p.add_argument("--study-dir", metavar="DIR",
                   help=_("the study's folder: trial-0000, trial-0001, ..., study.db and best.toml "
                          "(default: runs/tune-TASK-TIME); give it again to continue the study"))
    p.add_argument("--storage", metavar="URL",
                   help=_("an Optuna storage URL that several processes or machines share, e.g. "
                          "postgresql://user@host/db or sqlite:////shared/study.db (default: DIR/study.db)"))
    p.add_argument("--study-name", metavar="NAME", help=_("the study's name in the storage (default: the study "
                                                          "folder's name)"))
    p.add_argument("--config", metavar="FILE.toml", help=_("read settings from a TOML file (flags still win)"))
    add_flags(p)  # every `torchlab train` flag: fixed in every trial


def run(args) -> int:
    from torchlab import tune

    tune.require_optuna()
    job = tune.make_job(args.task, args.trials, args.param, given_settings(args), args.study_dir, args.storage,
                        args.study_name, args.config)
    study = tune.run_study(job)
    print(tune.results(job, study))
    return 0
