"""Image classification on in-memory datasets: `torchlab train fashion-mnist|mnist|cifar10|image-folder`.

The task spec the trainer (trainer.py) runs: the data is decoded once and kept
as uint8 tensors on the device (data/vision.py); a batch is images [B, C, H, W]
and labels [B]; the loss is cross-entropy; validation picks `best.pt` by
accuracy; the test scores the whole test split and draws its confusion matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from torchlab import distributed, runtime
from torchlab.config import TrainConfig
from torchlab.data import catalog
from torchlab.data.catalog import Loaded
from torchlab.data.vision import TensorLoader, centre_crop, eval_loader, hold_out
from torchlab.engine import classification_loss, evaluate, per_class_accuracy, train_step
from torchlab.errors import UserError
from torchlab.logger import confusion_figure
from torchlab.models.registry import build_model, model_config
from torchlab.optim import build_optimizer
from torchlab.recipes import device_kind
from torchlab.runtime import Runtime


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


class ImageTask:
    """How the trainer trains an image classifier (see trainer.py for what each member means)."""

    unit, score, higher_is_better = "images", "val_acc", True
    nan_hint = "lower --lr, or try --precision fp32"
    last_weights = "last epoch"

    def model_name(self, cfg: TrainConfig) -> str:
        return cfg.model

    def run_name(self, cfg: TrainConfig) -> str:
        return f"{cfg.task}-{cfg.model}"

    def prepare(self, cfg: TrainConfig, device: torch.device, resume: dict | None) -> Data:
        model_config(cfg.model)  # an unknown model name fails before the data is read
        data = prepare_data(cfg, device)
        if resume is not None and (list(data.info.classes), list(data.info.mean), list(data.info.std)) != \
                (resume["classes"], resume["mean"], resume["std"]):
            raise UserError(f"--resume: the data changed since the run started (classes or normalisation differ "
                            f"from {resume['path']})", "restore the original data, or start a new run")
        return data

    def model_config(self, data: Data):
        return dict(in_channels=len(data.info.mean), num_classes=len(data.info.classes),
                    image_size=data.samples.shape[-1])

    def total_steps(self, cfg: TrainConfig, data: Data) -> int:
        return cfg.epochs * len(data.train)

    def steps_in_epoch(self, cfg: TrainConfig, data: Data, epoch: int) -> int:
        return len(data.train)

    def samples_per_step(self, cfg: TrainConfig) -> int:
        return cfg.batch_size

    def batches(self, cfg: TrainConfig, data: Data, epoch: int, start: int):
        return data.train.epoch(epoch, start)

    def workload(self, cfg: TrainConfig, data: Data, steps: int) -> runtime.Workload:
        mcfg = model_config(cfg.model, **self.model_config(data))
        return workload(cfg, mcfg, data.samples.shape[1:], steps)

    def settings(self, rt: Runtime) -> dict:
        return rt.settings()

    def build(self, cfg: TrainConfig, data: Data, rt: Runtime):
        return build_model(cfg.model, model_config(cfg.model, **self.model_config(data))), []

    def loss_fn(self, cfg: TrainConfig):
        return classification_loss(cfg.label_smoothing)

    def restore_carry(self, ckpt: dict, state, device: torch.device):
        return None

    def samples(self, data: Data) -> torch.Tensor:
        return data.samples

    def train_metrics(self, metrics: dict) -> dict:
        return {"train_acc": metrics["sums"].get("correct", 0) / max(metrics["count"], 1)}

    def validate(self, s) -> dict:
        out = {}
        for name, loader in (("val", s.data.val), ("test", s.data.test if s.cfg.test_every_epoch else None)):
            if loader is not None:
                result = score(s.scored, loader, s)
                out[f"{name}_loss"], out[f"{name}_acc"] = result["loss"], result["acc"]
        return out

    def test(self, s, scored: str) -> tuple[dict, dict]:
        """Score the test split (or, with none, the val split the best epoch was chosen on, which flatters
        the model a little; the summary says which); log the confusion matrix."""
        split, loader = ("test", s.data.test) if s.data.test is not None else ("val", s.data.val)
        classes = s.data.info.classes
        result = score(s.model, loader, s)
        fig = confusion_figure(result["confusion"], classes, f"{s.cfg.task} {split}, {scored}") \
            if s.ctx.world.main else None  # None too without matplotlib
        if fig is not None:
            fig.savefig(s.run_dir / "confusion_matrix.png")
            s.writer.add_figure(f"{split}/confusion_matrix", fig, s.state.global_step)  # closes the figure
        s.writer.add_scalar(f"{split}/acc", result["acc"], s.state.global_step)
        per_class = dict(zip(classes, per_class_accuracy(result["confusion"])))
        summary = {"scored_split": split, f"{split}_acc": result["acc"], f"{split}_loss": result["loss"],
                   f"{split}_count": result["count"], f"{split}_scored": scored, "per_class_acc": per_class}
        return summary, {f"hparam/{split}_acc": result["acc"], "hparam/best_val_acc": s.state.best or 0}

    def checkpoint_extra(self, s) -> dict:
        info = s.data.info
        return {"classes": list(info.classes), "mean": list(info.mean), "std": list(info.std)}

    def summary_extra(self, s) -> dict:
        return {"model": s.cfg.model, "recipe": s.cfg.recipe}

    def describe(self, s, notes: list[str]) -> list[str]:
        cfg, data = s.cfg, s.data
        recipe = f"fast (target {cfg.target}%, {device_kind(cfg.device)} table)" if cfg.recipe == "fast" else cfg.recipe
        lines = [f"data: {cfg.task} from {data.info.source}: {data.counts['train']} train, {data.counts['val']} val, "
                 f"{data.counts['test']} test", *notes,
                 f"{s.rt.describe()}  model: {cfg.model}  recipe: {recipe}  run: {s.run_dir}"]
        return lines + ([distributed.describe(cfg.batch_size, "images")] if s.ctx.world.enabled else [])

    def epoch_line(self, r: dict, epochs: int, improved: bool) -> str:
        parts = [f"epoch {r['epoch']}/{epochs}", f"train loss {r['train_loss']:.4f} acc {r['train_acc']:.2%}"]
        if "val_acc" in r:
            parts.append(f"val loss {r['val_loss']:.4f} acc {r['val_acc']:.2%}" + (" *" if improved else ""))
        if "test_acc" in r:
            parts.append(f"test acc {r['test_acc']:.2%}")
        parts.append(f"{r['images_per_second']:.0f} img/s")
        return "  ".join(parts)


def score(model: torch.nn.Module, loader: TensorLoader, s) -> dict:
    """engine.evaluate over a whole split, with the run's test-time augmentation."""
    return evaluate(model, loader.epoch(), s.rt, len(s.data.info.classes), s.cfg.tta, s.cfg.tta_shift)


TASK = ImageTask()


def workload(cfg: TrainConfig, mcfg, shape: tuple, steps: int) -> runtime.Workload:
    """This run's training step, for runtime.choose to time: the model, optimizer and batch of the run, on
    random images (the speed does not depend on their values)."""
    per = cfg.batch_size // distributed.WORLD.size  # each process's share of the global batch

    def build(rt: Runtime):
        model = build_model(cfg.model, mcfg).to(rt.device)
        model = model.to(memory_format=torch.channels_last) if rt.channels_last else model
        forward = torch.compile(model) if rt.compile else model
        optimizer, _ = build_optimizer(cfg, model, 1)
        loss_fn = classification_loss(cfg.label_smoothing)
        x = torch.randn(per, *shape, device=rt.device)  # [B, C, H, W], as the loader gives it
        y = torch.randint(mcfg.num_classes, (per,), device=rt.device)

        def run(n: int) -> None:
            for _ in range(n):
                loss, *_ = train_step(forward, (x, y), loss_fn, None, optimizer, rt)
            loss.item()  # waits for the device

        return run

    name = f"{cfg.model} {'x'.join(map(str, shape))}, batch {per}, {cfg.optimizer}"
    return runtime.Workload(name, build, per, steps)
