"""One training run from start to finish, the same for every task.

`train(task, cfg)` creates (or resumes) the run directory, prepares the task's
data and model, then alternates a training epoch (`engine.train_steps` with the
task's loss) and the task's validation. It keeps `best.pt` (the best validation
score) and `last.pt`, writes `summary.json` as it goes, and stops on Ctrl-C
(resumably), on a NaN loss, on early stopping, at `--max-steps` or when an `on_epoch` hook (a
search's pruner, tune.py) raises Pruned. In the end
the task tests the best weights. Several processes (torchrun) share the work;
rank 0 writes the files.

A task (tasks/classify.py, tasks/lm.py) is a small object with what differs:

    name, unit ("images"/"tokens"), score ("val_acc"/"val_ppl"), higher_is_better, nan_hint
    prepare(cfg, device, resume) -> data       read the data (a resumed run passes its checkpoint); it may
                                               carry `settings` (config values it decided) and `sampled`
                                               (a --max-steps run scores a sample of val and test)
    total_steps(cfg, data), steps_in_epoch(cfg, data, epoch), samples_per_step(cfg)
    batches(cfg, data, epoch, start)           one epoch's batches from step `start` on
    workload(cfg, data, steps)                 the training step for runtime.choose to time
    settings(rt) -> dict                       the runtime choices the run's config keeps
    build(cfg, data, rt) -> (model, notes)     the model, with any warnings about it
    loss_fn(cfg)                               engine.train_steps' loss for one batch, with its carry
    restore_carry(ckpt, state, device)         the carry a mid-epoch checkpoint saved
    validate(s) -> dict                        "val_loss", "val_acc", ... for the epoch's record
    test(s, scored) -> (summary, hparams)      the final test of the kept weights
    checkpoint_extra(s), summary_extra(s)      what the task adds to checkpoints and summaries
    describe(s, notes) -> [lines]              what the run says when it starts
    epoch_line(record, epochs, improved)       what it says after each epoch
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from torchlab import checkpoint as ckpt_io
from torchlab import distributed, i18n, logger, lrfind, runinfo, runtime
from torchlab.config import save_toml
from torchlab.engine import (NonFiniteLoss, StopFlag, Terminated, graceful_interrupt, sigterm_raises, train_steps,
                             weight_average)
from torchlab.errors import Interrupted, Pruned, UserError
from torchlab.i18n import _
from torchlab.logger import Nothing, new_run_dir, open_writer, refuse_taken
from torchlab.optim import build_optimizer
from torchlab.runtime import Runtime


@dataclass
class State:
    """Where a run stands; saved in every checkpoint."""

    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # steps done inside the current epoch (non-zero after Ctrl-C or --max-steps)
    global_step: int = 0
    best: float | None = None  # the best validation score so far (the task's `score`)
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the best one, for --patience
    train_seconds: float = 0.0
    seen: int = 0  # samples trained on: images or tokens
    history: list = field(default_factory=list)  # one dict of metrics per epoch
    # [global step, loss] at every log step: the report draws short runs per step from it.
    loss_log: list = field(default_factory=list)
    # The best score came from a --max-steps run's sample of val: the first whole validation replaces it.
    best_sampled: bool = False

    @classmethod
    def restore(cls, saved: dict) -> "State":
        """The state a checkpoint saved; format 1 named the best score and the samples per task."""
        saved = dict(saved)
        if "best_acc" in saved:  # -1 before any validation
            acc = saved.pop("best_acc")
            saved["best"] = acc if acc >= 0 else None
        if "best_ppl" in saved:  # inf before any validation
            ppl = saved.pop("best_ppl")
            saved["best"] = ppl if saved.get("best_epoch") else None
        saved["seen"] = saved.pop("images_seen", saved.pop("tokens_seen", saved.get("seen", 0)))
        return cls(**saved)


@dataclass
class Context:
    """Who this process is and how much it says: passed to the run instead of read from module globals."""

    world: distributed.World = field(default_factory=lambda: distributed.WORLD)
    quiet: bool = False

    def say(self, *parts) -> None:
        """A progress message on stderr (stdout carries only results), from rank 0 unless quiet."""
        if not self.quiet and self.world.main:
            print(*parts, file=sys.stderr, flush=True)

    def progress(self, total: int, desc: str, unit: str, scale: int = 1):
        return Nothing() if self.quiet or not self.world.main else logger.progress(total, desc, unit, scale,
                                                                                    quiet=False)


@dataclass
class Session:
    """Everything one training run works with."""

    task: object
    cfg: object
    data: object
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    rt: Runtime
    state: State
    run_dir: Path
    writer: object
    ctx: Context
    average: object = None  # AveragedModel with --ema: the weights that are validated, kept and tested
    wrapped: object = None  # for the training forward: DistributedDataParallel and/or torch.compile of model
    carry: object = None  # what one batch hands the next inside an epoch (a language model's hidden state)

    @property
    def scored(self) -> torch.nn.Module:
        return self.average.module if self.average is not None else self.model

    def save(self, name: str) -> Path:
        """Every process calls this (it gathers their random states); only rank 0 writes."""
        path = self.run_dir / name
        ckpt = {"format": ckpt_io.FORMAT, "version": ckpt_io.VERSION, "task": self.cfg.task,
                "model_name": self.task.model_name(self.cfg), "model_config": dataclasses.asdict(self.model.config),
                **ckpt_io.model_states(self.model, self.average), "optimizer_state": self.optimizer.state_dict(),
                "scheduler_state": self.scheduler.state_dict() if self.scheduler is not None else None,
                "train_config": dataclasses.asdict(self.cfg), "state": dataclasses.asdict(self.state),
                **ckpt_io.rng_states(), **self.task.checkpoint_extra(self)}
        if self.ctx.world.main:
            ckpt_io.atomic_save(ckpt, path)
        return path


@dataclass
class Run:
    """A finished (or stopped) run: where it is, how it was set up, what it measured, the trained model."""

    run_dir: Path
    config: object
    summary: dict
    model: torch.nn.Module  # the weights that were tested (the best epoch's where there was one)

    @property
    def history(self) -> list[dict]:
        return self.summary["history"]

    @property
    def best(self) -> dict:
        """The best validation score and its epoch, e.g. {"val_acc": 0.91, "epoch": 3}."""
        key = next((k for k in self.summary if k.startswith("best_val_")), None)
        return {key[len("best_"):]: self.summary[key], "epoch": self.summary.get("best_epoch")} if key else {}

    @property
    def test(self) -> dict:
        """The final scores, e.g. {"test_acc": ..., "test_loss": ...} (val_* for an image folder without test/)."""
        return {k: v for k, v in self.summary.items()
                if k.split("_")[0] in ("test", "val") and k.split("_")[-1] in ("acc", "loss", "ppl")}


def setup(task, cfg, device: torch.device, resume: dict | None = None):
    """(cfg, data, rt, model, total steps, notes): a run's data, runtime and initial model, with the config
    they settled; also what `torchlab lr-find` sweeps on."""
    data = task.prepare(cfg, device, resume)
    cfg = dataclasses.replace(cfg, **getattr(data, "settings", {}))  # saved, so resume and --config agree
    steps = task.total_steps(cfg, data)
    rt, notes = runtime.choose(device, runtime.Requested.of(cfg),
                               task.workload(cfg, data, min(steps, cfg.max_steps or steps)))
    cfg = dataclasses.replace(cfg, **task.settings(rt))  # saved as chosen: resume and --config compute the same way
    torch.manual_seed(cfg.seed)  # initial weights
    model, warnings = task.build(cfg, data, rt)
    model = model.to(device)
    distributed.spread_seeds()  # the same initial weights everywhere, then each process its own dropout
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return cfg, data, rt, model, steps, notes + warnings


def start(task, cfg, ctx: Context, resume: dict | None = None, run_dir: Path | None = None,
          find_lr: bool = False) -> Session:
    """Data, model, optimizer and run directory of a new run, or of a resumed one as its checkpoint left it.
    `find_lr`: first the lr range test on the new model (lrfind.py), then train with its suggestion."""
    device = runtime.pick_device(cfg.device)
    if resume is None and cfg.run_dir:
        refuse_taken(Path(cfg.run_dir), resumable=True)  # before minutes of data preparation, not after
    cfg, data, rt, model, steps, notes = setup(task, cfg, device, resume)
    sweep = lrfind.before_training(task, cfg, data, rt, model, ctx.quiet) if find_lr and resume is None else None
    if sweep is not None:  # every process trains with rank 0's finding; config.toml records the number
        cfg = dataclasses.replace(cfg, lr=distributed.share(sweep.suggestion))
    optimizer, scheduler = build_optimizer(cfg, model, steps)
    average = weight_average(model, cfg.ema) if cfg.ema else None
    state, carry = State(), None
    if resume is not None:
        ckpt_io.restore_training(resume, model, average, optimizer, scheduler)
        state = State.restore(resume["state"])
        carry = task.restore_carry(resume, state, device)
    else:
        run_dir = create_run_dir(cfg, task.run_name(cfg), ctx.world)
        if sweep is not None:
            lrfind.after_sweep(sweep, cfg.lr, run_dir, ctx)
    writer = open_writer(run_dir) if ctx.world.main else Nothing()
    wrapped = distributed.wrap(model, device)
    wrapped = torch.compile(wrapped) if rt.compile else wrapped  # compiles on the first batch
    s = Session(task, cfg, data, model, optimizer, scheduler, rt, state, run_dir, writer, ctx, average,
                None if wrapped is model else wrapped, carry)
    if resume is None:
        first_logs(s)
    for line in task.describe(s, notes):
        ctx.say(line)
    return s


def first_logs(s: Session) -> None:
    """TensorBoard's record of how a new run began: its config and, for images, a few training samples."""
    samples = s.task.samples(s.data)
    if samples is not None:
        s.writer.add_images("train/samples", samples.float() / 255, 0)
    s.writer.add_text("config", "\n".join(f"    {k} = {v!r}" for k, v in dataclasses.asdict(s.cfg).items()), 0)


def create_run_dir(cfg, default_name: str, world: distributed.World) -> Path:
    """Rank 0 creates the run directory and its config.toml; every process learns its path (or the error)."""
    made = None
    if world.main:
        try:
            made = new_run_dir(cfg.run_dir, default_name, resumable=True)
            save_toml(cfg, made / "config.toml")
        except UserError as e:
            made = e
    made = distributed.share(made)
    if isinstance(made, UserError):
        raise made
    return made


def run_epoch(s: Session, stop: StopFlag) -> dict:
    """Train for (the rest of) one epoch with a progress bar; log loss and lr against the global step."""
    task, cfg, state = s.task, s.cfg, s.state
    begin = state.step_in_epoch
    bar = s.ctx.progress(task.steps_in_epoch(cfg, s.data, state.epoch) - begin,
                         f"epoch {state.epoch + 1}/{cfg.epochs}", task.unit[:3], task.samples_per_step(cfg))

    def on_log(step, loss, lr, samples):
        s.writer.add_scalar("train/loss", loss, step)
        state.loss_log.append([step, float(f"{loss:.6g}")])  # 6 digits draw a curve and keep summary.json short
        s.writer.add_scalar("lr", lr, step)
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def batches():
        for batch in task.batches(cfg, s.data, state.epoch, begin):
            yield batch
            bar.update(1)

    try:
        metrics = train_steps(s.wrapped or s.model, batches(), task.loss_fn(cfg), s.optimizer, s.scheduler, s.rt,
                              carry=s.carry, clip=getattr(cfg, "clip", 0.0), global_step=state.global_step,
                              max_steps=cfg.max_steps, log_every=cfg.log_every, stop=stop, on_log=on_log,
                              average=s.average)
    finally:
        bar.close()
    s.carry = metrics["carry"]
    state.global_step += metrics["steps"]
    state.step_in_epoch += metrics["steps"]
    state.train_seconds += metrics["seconds"]
    state.seen += metrics["count"]
    return metrics


def end_epoch(s: Session, metrics: dict, complete: bool = True) -> bool:
    """Validate, log, keep best.pt and last.pt; returns True when early stopping says stop.

    An incomplete epoch (--max-steps) keeps its position, so a resumed run finishes it exactly.
    """
    task, cfg, state = s.task, s.cfg, s.state
    record = {"epoch": state.epoch + 1, "step": state.global_step, "train_loss": metrics["loss"],
              **task.train_metrics(metrics), "train_seconds": round(state.train_seconds, 3),
              f"{task.unit}_per_second": metrics["count"] / max(metrics["seconds"], 1e-9)}
    for key, value in task.validate(s).items():
        record[key] = value
        s.writer.add_scalar(key.replace("_", "/", 1), value, state.global_step)  # val_acc -> val/acc
    if complete:
        state.epoch += 1
        state.step_in_epoch = 0
        s.carry = None  # each epoch starts afresh (a language model: from a zero state at a new offset)
    else:
        record["partial"] = True  # --max-steps stopped inside this epoch
    state.history.append(record)
    score = record.get(task.score)
    improved = is_better(s, score)
    state.bad_epochs = 0 if improved else state.bad_epochs + 1
    if improved:
        state.best, state.best_epoch = score, record["epoch"]
        state.best_sampled = sampled(s)
        s.save("best.pt")
    s.save("last.pt")
    write_summary(s, "running", {})  # `torchlab runs` sees the epochs so far
    s.ctx.say(task.epoch_line(record, cfg.epochs, improved))
    return bool(cfg.patience and score is not None and state.bad_epochs >= cfg.patience)


def sampled(s: Session) -> bool:
    return bool(getattr(s.data, "sampled", False))


def is_better(s: Session, score) -> bool:
    """Whether a validation score beats the best so far; one of the whole split always beats one of a
    --max-steps sample (a resumed dry run): the two are not comparable."""
    best = s.state.best
    if best is None or (s.state.best_sampled and not sampled(s)):
        return score is not None
    return score is not None and (score > best if s.task.higher_is_better else score < best)


def fit(s: Session, stop: StopFlag, on_epoch=None) -> str:
    """Run epochs until done, early-stopped, max-steps or Ctrl-C; returns how it ended. `on_epoch(epoch,
    record)` sees each whole epoch's record once it is saved (a search's pruner); it may raise Pruned."""
    cfg, state = s.cfg, s.state
    while state.epoch < cfg.epochs:
        try:
            metrics = run_epoch(s, stop)
        except NonFiniteLoss as e:
            raise non_finite_error(s, e) from None
        if stop.requested:
            path = s.save("last.pt")  # mid-epoch: resume replays the rest of this epoch exactly
            raise Interrupted(_("interrupted at step {step}; resumable checkpoint {path}; continue with: "
                                "torchlab train --resume {run_dir}").format(step=state.global_step, path=path,
                                                                            run_dir=s.run_dir))
        if metrics["stopped"]:  # --max-steps reached, part-way through this epoch
            if metrics["steps"]:
                end_epoch(s, metrics, complete=False)
            return "max-steps"
        stopping = end_epoch(s, metrics)
        if on_epoch is not None:  # after the checkpoints: a pruned run stays a consistent run directory
            on_epoch(state.epoch, state.history[-1])
        if stopping:
            s.ctx.say(_("early stop: no val improvement for {patience} epochs (best epoch {best})").format(
                patience=cfg.patience, best=state.best_epoch))
            return "early-stopped"
    return "finished"


def non_finite_error(s: Session, e: NonFiniteLoss) -> UserError:
    """The one-line error for a NaN loss, saying which checkpoint survives (train() records the failure)."""
    last = s.run_dir / "last.pt"

    def error() -> UserError:
        kept = (_("last good checkpoint {path} (epoch {epoch}) kept").format(path=last, epoch=s.state.epoch)
                if last.exists() else _("no checkpoint was written yet"))
        return UserError(_("loss became {value} at step {step} (epoch {epoch}); training stopped, {kept}").format(
            value=e.value, step=e.step, epoch=s.state.epoch + 1, kept=kept), _(s.task.nan_hint))

    shown = error()
    with i18n.speaking("en"):
        shown.english = str(error())  # for summary.json, which stays English
    return shown


def epochs_done(s: Session) -> float:
    """Completed epochs plus the share of a partial one (--max-steps stops inside an epoch): 1.35."""
    state = s.state
    if not state.step_in_epoch:
        return state.epoch
    return round(state.epoch + state.step_in_epoch / max(s.task.steps_in_epoch(s.cfg, s.data, state.epoch), 1), 4)


def write_summary(s: Session, status: str, extra: dict) -> dict:
    task, state = s.task, s.state
    summary = {"status": status, "run_dir": str(s.run_dir), "task": s.cfg.task, **task.summary_extra(s),
               "device": str(s.rt.device), "epochs": state.epoch, "epochs_done": epochs_done(s),
               "epochs_planned": s.cfg.epochs, "steps": state.global_step, f"best_{task.score}": state.best,
               "best_epoch": state.best_epoch or None, "train_seconds": round(state.train_seconds, 2),
               f"{task.unit}_per_second": round(state.seen / max(state.train_seconds, 1e-9), 1),
               **extra, "history": state.history, "loss_log": state.loss_log, "processes": s.ctx.world.size}
    if s.ctx.world.main:
        summary = runinfo.write(s.run_dir, summary)
    return summary


def finish(s: Session, status: str) -> dict:
    """Test the best epoch's weights (the last ones where no epoch was validated) and write the summary."""
    best = s.run_dir / "best.pt"
    scored = s.task.last_weights
    distributed.barrier()  # rank 0 has finished writing best.pt
    if s.state.best is not None and best.exists():
        s.model.load_state_dict(ckpt_io.load(best)["model_state"])
        scored = f"best epoch {s.state.best_epoch}"  # English in summary.json: runinfo.scored_text translates
    extra, metrics = s.task.test(s, scored)
    hparams = {k: v for k, v in dataclasses.asdict(s.cfg).items() if isinstance(v, (int, float, str, bool))}
    s.writer.add_hparams(hparams, metrics, run_name=".")
    return write_summary(s, status, extra)


def train(task, cfg, resume: dict | None = None, run_dir: Path | None = None, stop: StopFlag | None = None,
          ctx: Context | None = None, find_lr: bool = False, on_epoch=None) -> Run:
    """Train (or resume) one run; whatever ends it, summary.json says how. `find_lr`: see `start`;
    `on_epoch`: see `fit` (a Pruned it raises ends the run as "pruned", untested, and is raised again)."""
    ctx = ctx or Context(distributed.WORLD, logger.QUIET)
    s = start(task, cfg, ctx, resume, run_dir, find_lr)
    write_summary(s, "running", {})
    if s.state.epoch >= s.cfg.epochs:
        ctx.say(_("run already completed {epochs} epochs; scoring it again").format(epochs=s.state.epoch))
    stop = stop or StopFlag()
    try:
        with s.rt.threads_set(), sigterm_raises():
            with graceful_interrupt(stop):
                status = fit(s, stop, on_epoch)
            return Run(s.run_dir, s.cfg, finish(s, status), s.model)
    except Pruned:  # the search stopped a poor run: its checkpoints stay, no test is spent on it
        write_summary(s, "pruned", {"pruned_epoch": s.state.epoch})
        raise
    except (Interrupted, KeyboardInterrupt, Terminated) as e:
        write_summary(s, "interrupted", {"error": str(e)} if isinstance(e, Terminated) else {})
        raise
    except Exception as e:  # a NaN loss (a UserError), a crash: the run failed, and says why
        why = (getattr(e, "english", str(e)) if isinstance(e, UserError)  # summary.json stays English
               else f"{type(e).__name__}: {distributed.first_line(e)}")
        write_summary(s, "failed", {"error": why})
        raise
    finally:
        s.writer.close()
