"""Image classification on in-memory datasets: `torchlab train fashion-mnist|mnist`.

`train(cfg)` prepares the data and model, then runs `fit`, which alternates
`train_one_epoch` and `evaluate`, logs to TensorBoard and writes checkpoints.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

from torchlab import checkpoint as ckpt_io
from torchlab import distributed, runinfo, runtime
from torchlab.config import TrainConfig, device_kind, save_toml
from torchlab.data import catalog
from torchlab.data.catalog import Loaded
from torchlab.data.vision import TensorLoader, centre_crop, eval_loader, hold_out
from torchlab.engine import (NonFiniteLoss, StopFlag, evaluate, graceful_interrupt, per_class_accuracy,
                             train_one_epoch, train_step, weight_average)
from torchlab.errors import Interrupted, UserError
from torchlab.logger import Nothing, confusion_figure, new_run_dir, open_writer, progress, say
from torchlab.models.registry import build_model, model_config
from torchlab.runtime import Runtime


@dataclass
class TrainState:
    """Where a run stands; saved in every checkpoint."""

    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # steps completed inside the current epoch (non-zero after Ctrl-C)
    global_step: int = 0
    best_acc: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the best one, for --patience
    train_seconds: float = 0.0
    images_seen: int = 0
    history: list = field(default_factory=list)  # one dict of metrics per epoch


@dataclass
class Data:
    info: Loaded  # class names, normalisation, source (its splits stay on the CPU as uint8)
    train: TensorLoader
    val: TensorLoader | None
    test: TensorLoader | None  # image folders without test/ have none
    samples: torch.Tensor  # a few raw training images [64, C, H, W] uint8, for TensorBoard
    counts: dict  # images per split (all processes together)


def prepare_data(cfg: TrainConfig, device: torch.device) -> Data:
    """Decode once, split off validation (unless the dataset brings its own), keep uint8 on the device."""
    info = catalog.load(cfg.task, cfg.data_dir or None, size=cfg.image_size, val_fraction=cfg.val_fraction,
                        seed=cfg.seed)
    train, val = info.train, info.val
    if val is None and cfg.task != "image-folder":
        if cfg.val_size >= len(train):
            raise UserError(f"--val-size {cfg.val_size}: the training set has only {len(train)} images",
                            "use a smaller value")
        train, val = hold_out(train, cfg.val_size, cfg.seed)
    if val is None and info.test is None:
        raise UserError(f"--data-dir {cfg.data_dir}: nothing to evaluate on (no val/ or test/ sub-folder and "
                        "--val-fraction 0)", "give a --val-fraction above 0, or add a val/ sub-folder")
    if cfg.photo and info.crop:
        raise UserError(f"--photo {cfg.photo}: for datasets of whole items on a plain background (fashion-mnist, "
                        "mnist, cifar10), not image folders", "drop --photo; image folders train on random crops")
    if len(train) < cfg.batch_size:
        raise UserError(f"--batch-size {cfg.batch_size}: larger than the {len(train)} training images", "use a smaller batch")

    mean, std, world = info.mean, info.std, distributed.WORLD
    train_loader = TensorLoader(train.images.to(device), train.labels.to(device), cfg.batch_size, train=True,
                                seed=cfg.seed, augment=cfg.augment, flip=info.flip, pad=info.pad, crop=info.crop,
                                norm=(mean, std), erase=cfg.erase if cfg.augment else 0.0, photo=cfg.photo,
                                rows=world.slice_of_batch(cfg.batch_size))

    def share(split):  # each process scores its contiguous part of an evaluation split
        return eval_loader(split[world.part(len(split))], mean, std, device, cfg.eval_batch_size) if split is not None else None

    val_loader, test_loader = share(val), share(info.test)
    samples = centre_crop(train.images[:64], info.crop) if info.crop else train.images[:64]
    counts = {"train": len(train), "val": len(val) if val is not None else 0,
              "test": len(info.test) if info.test is not None else 0}
    return Data(info, train_loader, val_loader, test_loader, samples, counts)


def build_optimizer(cfg: TrainConfig, model: torch.nn.Module, total_steps: int):
    params = model.parameters()
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                                    weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adam":
        optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    elif cfg.schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total_steps,
                                                        pct_start=0.25)
    else:
        scheduler = None
    return optimizer, scheduler


def make_checkpoint(cfg, info: Loaded, model, optimizer, scheduler, state: TrainState, average=None) -> dict:
    return {
        "format": ckpt_io.FORMAT,
        "version": ckpt_io.VERSION,
        "task": cfg.task,
        "model_name": cfg.model,
        "model_config": dataclasses.asdict(model.config),
        **ckpt_io.model_states(model, average),
        "optimizer_state": optimizer.state_dict(),
        "scheduler_state": scheduler.state_dict() if scheduler is not None else None,
        "train_config": dataclasses.asdict(cfg),
        "state": dataclasses.asdict(state),
        **ckpt_io.rng_states(),
        "classes": list(info.classes),
        "mean": list(info.mean),
        "std": list(info.std),
    }


@dataclass
class Session:
    """Everything one training run works with."""

    cfg: TrainConfig
    data: Data
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    rt: Runtime
    state: TrainState
    run_dir: Path
    writer: object
    average: object = None  # AveragedModel with --ema: the weights that are validated, kept and tested
    wrapped: object = None  # for the training forward: DistributedDataParallel and/or torch.compile of model

    @property
    def scored(self) -> torch.nn.Module:
        return self.average.module if self.average is not None else self.model

    def save(self, name: str) -> Path:
        """Every process calls this (it gathers their random states); only rank 0 writes."""
        path = self.run_dir / name
        ckpt = make_checkpoint(self.cfg, self.data.info, self.model, self.optimizer, self.scheduler, self.state,
                               self.average)
        if distributed.WORLD.main:
            ckpt_io.atomic_save(ckpt, path)
        return path


def run_epoch(s: Session, stop: StopFlag) -> dict:
    """Train for (the rest of) one epoch with a progress bar; log loss and lr against the global step."""
    cfg, state = s.cfg, s.state
    start = state.step_in_epoch
    bar = progress(len(s.data.train) - start, f"epoch {state.epoch + 1}/{cfg.epochs}", "img", cfg.batch_size)

    def on_log(step, loss, lr, images):
        s.writer.add_scalar("train/loss", loss, step)
        s.writer.add_scalar("lr", lr, step)
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def batches():
        for batch in s.data.train.epoch(state.epoch, start):
            yield batch
            bar.update(1)

    try:
        metrics = train_one_epoch(
            s.wrapped or s.model, batches(), s.optimizer, s.scheduler, s.rt, label_smoothing=cfg.label_smoothing,
            global_step=state.global_step, max_steps=cfg.max_steps, log_every=cfg.log_every,
            stop=stop, on_log=on_log, average=s.average)
    finally:
        bar.close()
    state.global_step += metrics["steps"]
    state.step_in_epoch += metrics["steps"]
    state.train_seconds += metrics["seconds"]
    state.images_seen += metrics["images"]
    return metrics


def end_epoch(s: Session, metrics: dict, complete: bool = True) -> bool:
    """Validate, log, keep best.pt and last.pt; returns True when early stopping says stop.

    An incomplete epoch (--max-steps) keeps its position, so a resumed run finishes it exactly.
    """
    cfg, state, step = s.cfg, s.state, s.state.global_step
    record = {"epoch": state.epoch + 1, "step": step, "train_loss": metrics["loss"], "train_acc": metrics["acc"],
              "train_seconds": round(state.train_seconds, 3),
              "images_per_second": metrics["images"] / max(metrics["seconds"], 1e-9)}
    for name, loader in (("val", s.data.val), ("test", s.data.test if cfg.test_every_epoch else None)):
        if loader is not None:
            result = evaluate(s.scored, loader.epoch(), s.rt, len(s.data.info.classes), cfg.tta, cfg.tta_shift)
            record[f"{name}_loss"], record[f"{name}_acc"] = result["loss"], result["acc"]
            s.writer.add_scalar(f"{name}/loss", result["loss"], step)
            s.writer.add_scalar(f"{name}/acc", result["acc"], step)
    if complete:
        state.epoch += 1
        state.step_in_epoch = 0
    state.history.append(record)
    improved = "val_acc" in record and record["val_acc"] > state.best_acc
    state.bad_epochs = 0 if improved else state.bad_epochs + 1
    if improved:
        state.best_acc, state.best_epoch = record["val_acc"], record["epoch"]
        s.save("best.pt")
    s.save("last.pt")
    write_summary(s, "running", {})  # `torchlab runs` sees the epochs so far
    say(epoch_line(record, cfg.epochs, improved))
    return bool(cfg.patience and "val_acc" in record and state.bad_epochs >= cfg.patience)


def epoch_line(r: dict, epochs: int, improved: bool) -> str:
    parts = [f"epoch {r['epoch']}/{epochs}", f"train loss {r['train_loss']:.4f} acc {r['train_acc']:.2%}"]
    if "val_acc" in r:
        parts.append(f"val loss {r['val_loss']:.4f} acc {r['val_acc']:.2%}" + (" *" if improved else ""))
    if "test_acc" in r:
        parts.append(f"test acc {r['test_acc']:.2%}")
    parts.append(f"{r['images_per_second']:.0f} img/s")
    return "  ".join(parts)


def fit(s: Session, stop: StopFlag) -> str:
    """Run epochs until done, early-stopped, max-steps or Ctrl-C; returns how it ended."""
    cfg, state = s.cfg, s.state
    while state.epoch < cfg.epochs:
        try:
            metrics = run_epoch(s, stop)
        except NonFiniteLoss as e:
            raise non_finite_error(s, e) from None
        if stop.requested:
            path = s.save("last.pt")  # mid-epoch: resume replays the rest of this epoch exactly
            raise Interrupted(f"interrupted at step {state.global_step}; resumable checkpoint {path}; "
                              f"continue with: torchlab train --resume {s.run_dir}")
        if metrics["stopped"]:  # --max-steps reached, part-way through this epoch
            if metrics["steps"]:
                end_epoch(s, metrics, complete=False)
            return "max-steps"
        if end_epoch(s, metrics):
            say(f"early stop: no val improvement for {cfg.patience} epochs (best epoch {state.best_epoch})")
            return "early-stopped"
    return "finished"


def non_finite_error(s, e: NonFiniteLoss, summarise=None, hint: str = "lower --lr, or try --precision fp32") -> UserError:
    """Record a failed run (summary.json) and say which checkpoint survives; shared by every training task."""
    last = s.run_dir / "last.pt"
    kept = f"last good checkpoint {last} (epoch {s.state.epoch}) kept" if last.exists() else "no checkpoint was written yet"
    (summarise or write_summary)(s, "failed", {"error": str(e)})
    return UserError(f"loss became {e.value} at step {e.step} (epoch {s.state.epoch + 1}); training stopped, {kept}",
                     hint)


def write_summary(s: Session, status: str, extra: dict) -> dict:
    state = s.state
    summary = {
        "status": status,
        "run_dir": str(s.run_dir),
        "task": s.cfg.task,
        "model": s.cfg.model,
        "recipe": s.cfg.recipe,
        "device": str(s.rt.device),
        "epochs": state.epoch,
        "epochs_planned": s.cfg.epochs,
        "steps": state.global_step,
        "best_val_acc": state.best_acc if state.best_acc >= 0 else None,
        "best_epoch": state.best_epoch or None,
        "train_seconds": round(state.train_seconds, 2),
        "images_per_second": round(state.images_seen / max(state.train_seconds, 1e-9), 1),
        **extra,
        "history": state.history,
    }
    summary["processes"] = distributed.WORLD.size
    if distributed.WORLD.main:
        summary = runinfo.write(s.run_dir, summary)
    return summary


def finish(s: Session, status: str) -> dict:
    """Score the test set (or, with none, the val set) with the best weights; log the confusion matrix; summarise.

    Without a test split the score is that of the val set the best epoch was
    chosen on, so it flatters the model a little; the summary says which it is.
    """
    best = s.run_dir / "best.pt"
    scored = "last epoch"
    distributed.barrier()  # rank 0 has finished writing best.pt
    if best.exists() and s.data.val is not None:
        s.model.load_state_dict(ckpt_io.load(best)["model_state"])
        scored = f"best epoch {s.state.best_epoch}"
    split, loader = ("test", s.data.test) if s.data.test is not None else ("val", s.data.val)
    classes = s.data.info.classes
    result = evaluate(s.model, loader.epoch(), s.rt, len(classes), s.cfg.tta, s.cfg.tta_shift)
    fig = confusion_figure(result["confusion"], classes, f"{s.cfg.task} {split}, {scored}") \
        if distributed.WORLD.main else None
    if fig is not None:
        fig.savefig(s.run_dir / "confusion_matrix.png")
        s.writer.add_figure(f"{split}/confusion_matrix", fig, s.state.global_step)  # closes the figure
    s.writer.add_scalar(f"{split}/acc", result["acc"], s.state.global_step)
    hparams = {k: v for k, v in dataclasses.asdict(s.cfg).items() if isinstance(v, (int, float, str, bool))}
    s.writer.add_hparams(hparams, {f"hparam/{split}_acc": result["acc"], "hparam/best_val_acc": max(s.state.best_acc, 0)},
                         run_name=".")
    per_class = dict(zip(classes, per_class_accuracy(result["confusion"])))
    return write_summary(s, status, {"scored_split": split, f"{split}_acc": result["acc"], f"{split}_loss": result["loss"],
                                     f"{split}_count": result["count"], f"{split}_scored": scored,
                                     "per_class_acc": per_class})


def start(cfg: TrainConfig, resume: dict | None, run_dir: Path | None) -> Session:
    device = runtime.pick_device(cfg.device)
    model_config(cfg.model)  # an unknown model name fails before the data is read
    data = prepare_data(cfg, device)
    if resume is not None and (list(data.info.classes), list(data.info.mean), list(data.info.std)) != \
            (resume["classes"], resume["mean"], resume["std"]):
        raise UserError(f"--resume: the data changed since the run started (classes or normalisation differ from "
                        f"{resume['path']})", "restore the original data, or start a new run")
    mcfg = model_config(cfg.model, in_channels=len(data.info.mean), num_classes=len(data.info.classes),
                        image_size=data.samples.shape[-1])
    steps = cfg.epochs * len(data.train)
    rt, notes = runtime.choose(device, runtime.Requested.of(cfg), workload(cfg, mcfg, data.samples.shape[1:],
                                                                           min(steps, cfg.max_steps or steps)))
    cfg = dataclasses.replace(cfg, **rt.settings())  # saved as chosen: resume and --config compute the same way
    torch.manual_seed(cfg.seed)  # initial weights
    model = build_model(cfg.model, mcfg).to(device)
    distributed.spread_seeds()  # the same initial weights everywhere, then each process its own dropout
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer, scheduler = build_optimizer(cfg, model, steps)
    average = weight_average(model, cfg.ema) if cfg.ema else None
    state = TrainState()
    if resume is not None:
        ckpt_io.restore_training(resume, model, average, optimizer, scheduler)
        state = TrainState(**resume["state"])
    else:
        run_dir = create_run_dir(cfg, f"{cfg.task}-{cfg.model}")
    writer = open_writer(run_dir) if distributed.WORLD.main else Nothing()
    if resume is None:
        writer.add_images("train/samples", data.samples.float() / 255, 0)
        writer.add_text("config", "\n".join(f"    {k} = {v!r}" for k, v in dataclasses.asdict(cfg).items()), 0)
    say(f"data: {cfg.task} from {data.info.source}: {data.counts['train']} train, {data.counts['val']} val, "
        f"{data.counts['test']} test")
    for note in notes:
        say(note)
    recipe = f"fast (target {cfg.target}%, {device_kind(cfg.device)} table)" if cfg.recipe == "fast" \
        else cfg.recipe
    say(f"{rt.describe()}  model: {cfg.model}  recipe: {recipe}  run: {run_dir}")
    if distributed.WORLD.enabled:
        say(distributed.describe(cfg.batch_size, "images"))
    wrapped = distributed.wrap(model, device)
    wrapped = torch.compile(wrapped) if rt.compile else wrapped  # compiles on the first batch
    return Session(cfg, data, model, optimizer, scheduler, rt, state, run_dir, writer, average,
                   None if wrapped is model else wrapped)


def workload(cfg: TrainConfig, mcfg, shape: tuple, steps: int) -> runtime.Workload:
    """This run's training step, for runtime.choose to time: the model, optimizer and batch of the run, on
    random images (the speed does not depend on their values)."""
    per = cfg.batch_size // distributed.WORLD.size  # each process's share of the global batch

    def build(rt: Runtime):
        model = build_model(cfg.model, mcfg).to(rt.device)
        model = model.to(memory_format=torch.channels_last) if rt.channels_last else model
        forward = torch.compile(model) if rt.compile else model
        optimizer, _ = build_optimizer(cfg, model, 1)
        x = torch.randn(per, *shape, device=rt.device)  # [B, C, H, W], as the loader gives it
        y = torch.randint(mcfg.num_classes, (per,), device=rt.device)

        def run(n: int) -> None:
            for _ in range(n):
                loss, _ = train_step(forward, x, y, optimizer, rt, cfg.label_smoothing)
            loss.item()  # waits for the device

        return run

    name = f"{cfg.model} {'x'.join(map(str, shape))}, batch {per}, {cfg.optimizer}"
    return runtime.Workload(name, build, per, steps)


def create_run_dir(cfg, default_name: str) -> Path:
    """Rank 0 creates the run directory and its config.toml; every process learns its path (or the error)."""
    made = None
    if distributed.WORLD.main:
        try:
            made = new_run_dir(cfg.run_dir, default_name, resumable=True)
            save_toml(cfg, made / "config.toml")
        except UserError as e:
            made = e
    made = distributed.share(made)
    if isinstance(made, UserError):
        raise made
    return made


def train(cfg: TrainConfig, resume: dict | None = None, run_dir: Path | None = None, stop: StopFlag | None = None) -> dict:
    """Train (or resume) one run and return its summary dict."""
    s = start(cfg, resume, run_dir)
    write_summary(s, "running", {})
    if s.state.epoch >= cfg.epochs:
        say(f"run already completed {s.state.epoch} epochs; scoring it again")
    with s.rt.threads_set():
        return supervise(s, fit, finish, write_summary, stop or StopFlag())


def supervise(s, fit, finish, summarise, stop: StopFlag) -> dict:
    """Run `fit` with Ctrl-C caught, then `finish`; an interrupted run still leaves its summary; the writer closes.

    Shared by every training task: `s` is the task's session (with .writer), the functions are the task's own.
    """
    try:
        with graceful_interrupt(stop):
            status = fit(s, stop)
        return finish(s, status)
    except Interrupted:
        summarise(s, "interrupted", {})
        raise
    finally:
        s.writer.close()
