"""`torchlab tune`: a hyper-parameter search with Optuna in which every trial is an ordinary training run.

The study lives in a database (SQLite at DIR/study.db, or any Optuna storage URL), so it survives Ctrl-C
and several processes or machines pointed at one database share it: each takes the next trial until the
study holds N complete or pruned ones. Trial k trains through api.train, the code path of `torchlab train`,
in DIR/trial-000k (so `torchlab runs DIR` lists the trials), and reports its validation score after every
epoch to a median pruner, which stops a run that falls behind the earlier trials (status "pruned").
"""

from __future__ import annotations

import dataclasses
import math
import os
import shlex
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from torchlab import logger, runinfo
from torchlab.config import FIND, check_value, config_class, load_toml, toml_text
from torchlab.errors import Interrupted, Pruned, UserError
from torchlab.i18n import N_, _, shown_width

# Without --param: the learning rate and weight decay log-uniform, the batch size one of three. Settings
# given as flags stay fixed and leave the default space.
DEFAULT_SPACE = {
    "images": ("lr=1e-4:1e-1:log", "weight_decay=1e-6:1e-2:log", "batch_size=32,64,128"),
    "lm": ("lr=1e-4:1e-2:log", "weight_decay=1e-3:0.3:log", "batch_size=16,32,64"),
}
# Optuna's heartbeat (seconds): a trial whose process was killed outright stops counting as running after
# GRACE, so it neither blocks the study's end nor is waited for by the other processes.
HEARTBEAT, GRACE = 30, 120
STATES = (N_("complete"), N_("pruned"), N_("fail"), N_("running"), N_("waiting"))  # Optuna's, shown translated
HEADER = (N_("trial"), N_("state"), N_("value"), N_("params"), N_("run"))


def require_optuna():
    try:
        import optuna
    except ModuleNotFoundError:
        raise UserError(_("tune needs Optuna, which is not installed"),
                        _("pip install 'torchlab[tune]'")) from None
    # The heartbeat (HEARTBEAT) is "experimental" in Optuna; saying so on every command helps no one.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


@dataclass(frozen=True)
class Param:
    """One searched setting: a range LOW..HIGH (ints stay ints; `log`: log-uniform) or a list of choices."""

    name: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple = ()

    def suggest(self, trial):
        if self.choices:
            return trial.suggest_categorical(self.name, list(self.choices))
        if isinstance(self.low, int):
            return trial.suggest_int(self.name, self.low, self.high, log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)


def malformed(text: str, reason: str) -> UserError:
    return UserError(_("--param {param}: malformed ({reason})").format(param=text, reason=reason),
                     _("e.g. --param lr=1e-4:1e-1:log or --param batch_size=32,64,128"))


def parse_param(text: str, cls: type) -> Param:
    """NAME=LOW:HIGH[:log] or NAME=a,b,c, checked against the setting's type, choices and bounds."""
    name, sep, spec = text.partition("=")
    name = name.strip().replace("-", "_")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.metadata["flag"] and f.name != "run_dir"}
    if name not in fields:
        raise UserError(_("--param {param}: {name} is not a setting of this task").format(param=text, name=repr(name)),
                        _("name a `torchlab train` flag without its dashes, e.g. lr or weight_decay"))
    if not sep or not spec.strip():
        raise malformed(text, _("no values after ="))
    f = fields[name]
    return parse_range(f, spec, text) if ":" in spec else parse_choices(f, spec, text)


def parse_range(f: dataclasses.Field, spec: str, text: str) -> Param:
    kind = type(f.default)
    if kind not in (int, float):
        raise malformed(text, _("{name} is not a number: list its values as a,b,c").format(name=f.name))
    parts = [p.strip() for p in spec.split(":")]
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "log"):
        raise malformed(text, _("a range is LOW:HIGH or LOW:HIGH:log"))
    low, high = (value_of(kind, p, text) for p in parts[:2])
    for value in (low, high):
        check_value(f, value, f"--param {f.name}")
    if not low < high:
        raise malformed(text, _("LOW must be below HIGH"))
    if len(parts) == 3 and low <= 0:
        raise malformed(text, _("a log range needs LOW above 0"))
    return Param(f.name, low, high, log=len(parts) == 3)


def parse_choices(f: dataclasses.Field, spec: str, text: str) -> Param:
    items = [s.strip() for s in spec.split(",")]
    if "" in items:
        raise malformed(text, _("an empty value in the list"))
    values = tuple(dict.fromkeys(value_of(type(f.default), s, text) for s in items))  # once each, in order
    for value in values:
        check_value(f, value, f"--param {f.name}")
    return Param(f.name, choices=values)


def value_of(kind: type, text: str, param: str):
    """One value as the setting's type: "64" an int for an int setting, "true" a bool, "1e-3" a float."""
    if kind is bool:
        if text.lower() not in ("true", "false"):
            raise malformed(param, _("{value} is not true or false").format(value=text))
        return text.lower() == "true"
    try:
        return kind(text)
    except ValueError:
        raise malformed(param, _("{value} is not {kind}").format(value=text, kind=kind.__name__)) from None


def parse_space(params: list[str], task: str, given: dict) -> list[Param]:
    """The searched settings: --param's, else the task's DEFAULT_SPACE less the settings given as flags."""
    cls = config_class(task)
    if not params:
        default = DEFAULT_SPACE["lm" if task == "lm" else "images"]
        return [p for p in (parse_param(t, cls) for t in default) if p.name not in given]
    space = [parse_param(t, cls) for t in params]
    seen = set()
    for p in space:
        if p.name in given or p.name in seen:
            raise UserError(_("--param {name}: given twice").format(name=p.name),
                            _("search it with --param or fix it with --{flag}, once").format(
                                flag=p.name.replace("_", "-")))
        seen.add(p.name)
    return space


@dataclass
class Job:
    """One `torchlab tune` command: what every trial trains, what it searches, where the study lives."""

    task: str
    trials: int
    settings: dict  # the train flags given, the same in every trial
    space: list
    folder: Path
    config: str | None = None
    storage: str | None = None  # an Optuna storage URL; None: SQLite in the folder
    study_name: str = ""
    command: str = field(default_factory=lambda: runinfo.COMMAND)

    @property
    def score(self) -> str:
        return "val_ppl" if self.task == "lm" else "val_acc"

    @property
    def where(self) -> str:
        return f"--storage {self.storage}" if self.storage else str(self.folder / "study.db")


def make_job(task: str, trials: int, params: list[str], settings: dict, folder: str | None, storage: str | None,
             study_name: str | None, config: str | None) -> Job:
    """Check everything before any database or training is touched."""
    if "run_dir" in settings:
        raise UserError(_("tune: --run-dir does not apply; each trial trains in the study folder"),
                        _("name that folder with --study-dir"))
    if settings.get("lr") == FIND:
        raise UserError(_("tune: --lr find would pick the learning rate in every trial"),
                        _("search it with --param lr=1e-4:1e-1:log"))
    space = parse_space(params, task, settings)
    path = Path(folder or f"runs/tune-{task}-{time.strftime('%Y%m%d-%H%M%S')}")
    settings = dict(sorted(settings.items()))  # the printed commands and best.toml the same every time
    return Job(task, trials, settings, space, path, config, storage, study_name or path.name)


def make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(_("{flag} {path}: cannot create ({reason})").format(flag="--study-dir", path=folder,
                                                                            reason=e.strerror or e),
                        _("choose a writable folder")) from None
    if not os.access(folder, os.W_OK):
        raise UserError(_("--study-dir {path}: not writable").format(path=folder), _("choose a writable folder"))


LOCK_WAIT = 60  # seconds SQLite waits for a lock another process holds, before the study cannot be opened


def open_storage(job: Job):
    """Optuna's RDB storage. SQLite waits up to LOCK_WAIT s for a lock that another process holds."""
    optuna = require_optuna()
    url = job.storage or f"sqlite:///{(job.folder / 'study.db').resolve()}"
    kwargs = {"connect_args": {"timeout": LOCK_WAIT}} if url.startswith("sqlite") else None
    return retried(job, url, lambda: optuna.storages.RDBStorage(url, engine_kwargs=kwargs,
                                                                 heartbeat_interval=HEARTBEAT, grace_period=GRACE))


RACES = ("already exists", "UNIQUE constraint failed")  # what two processes creating one SQLite study meet


def retried(job: Job, url: str, make):
    """make(), tried again when two processes that create one new SQLite database (its tables, its study) at
    once collide: the second try finds what the other made. Any other failure is a one-line error."""
    for attempt in range(4):
        try:
            return make()
        except Exception as e:  # sqlalchemy's and Optuna's many kinds: a bad URL, no driver, a lock, a bad file
            text = str(e).strip()
            if attempt == 3 or not url.startswith("sqlite") or not any(race in text for race in RACES):
                raise UserError(_("{where}: cannot open the study database ({reason})").format(
                    where=job.where, reason=text.splitlines()[0] if text else type(e).__name__),
                    _("check the URL, the path and its permissions")) from None
            time.sleep(0.5 * (attempt + 1))


def open_study(job: Job):
    optuna = require_optuna()
    storage = open_storage(job)
    direction = "minimize" if job.task == "lm" else "maximize"
    url = job.storage or "sqlite:"
    study = retried(job, url, lambda: optuna.create_study(storage=storage, study_name=job.study_name,
                                                          direction=direction, pruner=make_pruner(),
                                                          load_if_exists=True))
    task = study.user_attrs.get("task")
    if task is None:
        study.set_user_attr("task", job.task)
    elif task != job.task:
        raise UserError(_("study {name} in {where} searches {task}, not {given}").format(
            name=job.study_name, where=job.where, task=task, given=job.task), _("give another --study-name"))
    return study


def make_pruner():
    """Median pruning: after two trials, one whose validation score at an epoch is worse than the median of
    the earlier trials' at that epoch stops there."""
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)


def counted(study) -> int:
    """Trials that count towards --trials: complete, pruned, and running (in this or another process), so
    that processes sharing a study stop at N between them instead of each starting one more."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)))


def pruning_hook(trial, score: str):
    """trainer's on_epoch: report the epoch's validation score, and end the run when the pruner says so."""
    def on_epoch(epoch: int, record: dict) -> None:
        value = record.get(score)
        if value is None or not math.isfinite(value):
            return
        trial.report(value, epoch)
        if trial.should_prune():
            raise Pruned(f"trial {trial.number} pruned after epoch {epoch}")
    return on_epoch


def objective(job: Job):
    """One trial: a training run with the trial's values, in the study folder; its value is the best
    validation score (accuracy, or perplexity for a language model)."""
    import optuna

    from torchlab import api

    def run_trial(trial) -> float:
        values = {p.name: p.suggest(trial) for p in job.space}
        run_dir = job.folder / f"trial-{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        runinfo.COMMAND = train_command(job, {**values, "run_dir": str(run_dir)})  # summary.json replays it
        logger.say(_("trial {number}: {params} in {run_dir}").format(number=trial.number, params=params_text(values),
                                                                      run_dir=run_dir))
        try:
            run = api.train(job.task, config=job.config, on_epoch=pruning_hook(trial, job.score),
                            **{**job.settings, **values, "run_dir": str(run_dir)})
        except Pruned:
            raise optuna.TrialPruned() from None
        value = run.best.get(job.score)
        if value is None:
            raise UserError(_("tune: trial {number} has no validation score to compare").format(number=trial.number),
                            _("keep a validation split (--val-size or --val-fraction above 0)"))
        return value
    return run_trial


def run_study(job: Job):
    """Run trials until the study holds job.trials of them; returns the study. Ctrl-C prints the trials so
    far and raises Interrupted: the study is kept and the same command continues it."""
    optuna = require_optuna()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own lines say what each trial did
    make_folder(job.folder)
    study = open_study(job)
    runinfo.write_demo(job.folder, "tune", study=job.study_name)  # `torchlab runs` tells it from a broken run

    def enough(study, trial) -> None:
        say_trial(trial)
        if counted(study) >= job.trials:
            study.stop()

    command = runinfo.COMMAND
    try:
        optuna.storages.fail_stale_trials(study)  # trials of killed processes: neither running nor counted
        if counted(study) < job.trials:
            study.optimize(objective(job), callbacks=[enough])
    except (Interrupted, KeyboardInterrupt):
        print(results(job, study))
        raise Interrupted(_("tune interrupted; the study is kept in {where}; continue it with: {command}").format(
            where=job.where, command=continue_command(job, command))) from None
    finally:
        runinfo.COMMAND = command
    return study


def say_trial(trial) -> None:
    value = "-" if trial.value is None else f"{trial.value:.4g}"
    logger.say(_("trial {number} {state}: value {value}").format(number=trial.number,
                                                                 state=_(trial.state.name.lower()), value=value))


def continue_command(job: Job, command: str) -> str:
    """The command that continues this study: the same one, with its study folder named."""
    words = shlex.split(command) if command else ["torchlab", "tune", job.task, "--trials", str(job.trials)]
    return shlex.join(words if "--study-dir" in words else [*words, "--study-dir", str(job.folder)])


def train_command(job: Job, values: dict) -> str:
    """`torchlab train TASK --flag value ...`: the job's fixed settings with `values`."""
    argv = ["torchlab", "train", job.task, *(["--config", job.config] if job.config else [])]
    for key, value in {**job.settings, **values}.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else f"--no-{flag[2:]}")
        else:
            argv += [flag, str(value)]
    return shlex.join(argv)


def best_settings(job: Job, params: dict) -> dict:
    """Everything the best trial was given, as one --config file: the task, the tune's own --config file,
    its flags and the trial's values."""
    from_file = load_toml(job.config) if job.config else {}
    values = {"task": job.task, **from_file, **job.settings, **params}
    values.pop("run_dir", None)
    return values


def params_text(params: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()) or "-"


def value_text(trial) -> str:
    """The trial's value; a pruned one's last reported score, in parentheses."""
    if trial.value is not None:
        return f"{trial.value:.4g}"
    reports = trial.intermediate_values
    return f"({reports[max(reports)]:.4g})" if reports else "-"


def trials_table(study) -> str:
    rows = [[_(h) for h in HEADER]]
    rows += [[str(t.number), _(t.state.name.lower()), value_text(t), params_text(t.params),
              t.user_attrs.get("run_dir", "-")] for t in study.get_trials(deepcopy=False)]
    widths = [max(shown_width(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(c + " " * (w - shown_width(c)) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def best_text(job: Job, study) -> str:
    """The best trial as a `torchlab train` command and as the TOML written to DIR/best.toml."""
    try:
        best = study.best_trial
    except ValueError:  # no trial completed yet
        return _("no trial has completed yet")
    toml = toml_text(best_settings(job, best.params))
    path = job.folder / "best.toml"
    path.write_text(toml)
    return "\n".join([
        _("best trial {number}: {score} {value} ({run_dir})").format(number=best.number, score=job.score,
                                                                     value=f"{best.value:.4g}",
                                                                     run_dir=best.user_attrs.get("run_dir", "-")),
        _("train it with: {command}").format(command=train_command(job, best.params)),
        _("or with: torchlab train --config {path}, which holds:").format(path=path), toml.rstrip()])


def results(job: Job, study) -> str:
    return trials_table(study) + "\n\n" + best_text(job, study)
