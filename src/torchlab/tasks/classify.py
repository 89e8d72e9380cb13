"""Image classification on in-memory datasets: `torchlab train fashion-mnist|mnist|cifar10|image-folder`.

The task spec the trainer (trainer.py) runs: the data is decoded once and kept
as uint8 tensors on the device (data/vision.py); a batch is images [B, C, H, W]
and labels [B]; the loss is cross-entropy; validation picks `best.pt` by
accuracy; the test scores the whole test split and draws its confusion matrix.
A --max-steps run (a dry run) scores a seeded sample of EVAL_SAMPLE_IMAGES
images of each evaluation split instead, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from torchlab import distributed, runinfo, runtime
from torchlab.config import TrainConfig
from torchlab.data import catalog
from torchlab.data.catalog import Loaded
from torchlab.data.vision import TensorLoader, centre_crop, eval_loader, hold_out
from torchlab.engine import classification_loss, evaluate, per_class_accuracy, train_step
from torchlab.errors import UserError
from torchlab.i18n import N_, _, speaking
from torchlab.logger import confusion_figure, say
from torchlab.models.registry import build_model, model_config
from torchlab.optim import build_optimizer
from torchlab.recipes import device_kind
from torchlab.runtime import Runtime

# A --max-steps run scores at most this many images of val and of test (a seeded sample, in split order):
# a dry run should take seconds, and Fashion-MNIST's 15,000 evaluation images take longer than its steps.
EVAL_SAMPLE_IMAGES = 1000


@dataclass
class Data:
    info: Loaded  # class names, normalisation, source (its splits stay on the CPU as uint8)
    train: TensorLoader
    val: TensorLoader | None
    test: TensorLoader | None  # image folders without test/ have none
    samples: torch.Tensor  # a few raw training images [64, C, H, W] uint8, for TensorBoard
    counts: dict  # images per split (all processes together)
    scored: dict | None = None  # images each evaluation scores, when a --max-steps run scores a sample
    settings: dict = field(default_factory=dict)  # config values decided here (a default batch size cut down)

    @property
    def sampled(self) -> bool:
        return self.scored is not None

    def sample_note(self, split: str = "") -> str:
        """"a sample of 1,000 of 10,000 test images" (one split), or of every evaluation split."""
        return runinfo.sample_note(self.scored, self.counts, "images", (split,) if split else self.scored)


def batch_size_for(cfg: TrainConfig, images: int) -> int:
    """The training batch. A batch larger than the training set is an error when the user asked for it;
    when it came from the defaults (a few photos in an image folder), the batch becomes the whole set."""
    if images >= cfg.batch_size:
        return cfg.batch_size
    if "batch_size" in getattr(cfg, "explicit", ("batch_size",)):  # unknown origin: as if given
        raise UserError(_("--batch-size {size}: larger than the {images} training images").format(size=cfg.batch_size, images=images),
                        _("use a smaller batch"))
    size = images - images % distributed.WORLD.size  # a global batch splits evenly over the processes
    say(_("batch size {size} (the whole training set): the default {default} is more than its {images} images")
        .format(size=size, default=cfg.batch_size, images=images))
    return size


def eval_sample(split, seed: int):
    """A --max-steps run's evaluation split: at most EVAL_SAMPLE_IMAGES rows, drawn with the seed, kept in
    split order (an image folder's val/ is sorted by class, so its leading rows would be one class)."""
    if split is None or len(split) <= EVAL_SAMPLE_IMAGES:
        return split
    rows = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:EVAL_SAMPLE_IMAGES]
    return split[rows.sort().values]


def loaders(cfg: TrainConfig, info: Loaded, train, val, test, device: torch.device, batch: int):
    """The training loader (this process's rows of each batch) and the evaluation loaders (this process's
    contiguous part of each split)."""
    mean, std, world = info.mean, info.std, distributed.WORLD
    train_loader = TensorLoader(train.images.to(device), train.labels.to(device), batch, train=True,
                                seed=cfg.seed, augment=cfg.augment, flip=info.flip, pad=info.pad, crop=info.crop,
                                norm=(mean, std), erase=cfg.erase if cfg.augment else 0.0, photo=cfg.photo,
                                rows=world.slice_of_batch(batch))

    def share(split):
        if split is None:
            return None
        return eval_loader(split[world.part(len(split))], mean, std, device, cfg.eval_batch_size)

    return train_loader, share(val), share(test)


def prepare_data(cfg: TrainConfig, device: torch.device) -> Data:
    """Decode once, split off validation (unless the dataset brings its own), keep uint8 on the device."""
    info = catalog.load(cfg.task, cfg.data_dir or None, size=cfg.image_size, val_fraction=cfg.val_fraction,
                        seed=cfg.seed)
    train, val = info.train, info.val
    if val is None and cfg.task != "image-folder":
        if cfg.val_size >= len(train):
            raise UserError(_("--val-size {size}: the training set has only {images} images")
                            .format(size=cfg.val_size, images=len(train)), _("use a smaller value"))
        train, val = hold_out(train, cfg.val_size, cfg.seed)
    if val is None and info.test is None:
        raise UserError(_("--data-dir {dir}: nothing to evaluate on (no val/ or test/ sub-folder and --val-fraction 0)")
                        .format(dir=cfg.data_dir), _("give a --val-fraction above 0, or add a val/ sub-folder"))
    if cfg.photo and info.crop:
        raise UserError(_("--photo {photo}: for datasets of whole items on a plain background (fashion-mnist, mnist, cifar10), "
                          "not image folders").format(photo=cfg.photo),
                        _("drop --photo; image folders train on random crops"))
    batch = batch_size_for(cfg, len(train))
    scored_val, scored_test = (eval_sample(val, cfg.seed), eval_sample(info.test, cfg.seed)) if cfg.max_steps \
        else (val, info.test)
    train_loader, val_loader, test_loader = loaders(cfg, info, train, scored_val, scored_test, device, batch)
    samples = centre_crop(train.images[:64], info.crop) if info.crop else train.images[:64]
    counts = {"train": len(train), "val": len(val) if val is not None else 0,
              "test": len(info.test) if info.test is not None else 0}
    scored = {k: len(split) for k, split in (("val", scored_val), ("test", scored_test)) if split is not None}
    sampled = scored_val is not val or scored_test is not info.test
    return Data(info, train_loader, val_loader, test_loader, samples, counts, scored if sampled else None,
                {"batch_size": batch} if batch != cfg.batch_size else {})


class ImageTask:
    """How the trainer trains an image classifier (see trainer.py for what each member means)."""

    unit, score, higher_is_better = "images", "val_acc", True
    nan_hint = N_("lower --lr, or try --precision fp32")
    last_weights = N_("last epoch")

    def model_name(self, cfg: TrainConfig) -> str:
        return cfg.model

    def run_name(self, cfg: TrainConfig) -> str:
        return f"{cfg.task}-{cfg.model}"

    def prepare(self, cfg: TrainConfig, device: torch.device, resume: dict | None) -> Data:
        model_config(cfg.model)  # an unknown model name fails before the data is read
        data = prepare_data(cfg, device)
        if resume is not None and (list(data.info.classes), list(data.info.mean), list(data.info.std)) != \
                (resume["classes"], resume["mean"], resume["std"]):
            raise UserError(_("--resume: the data changed since the run started (classes or normalisation differ from {path})")
                            .format(path=resume['path']), _("restore the original data, or start a new run"))
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
        with speaking("en"):  # summary.json stays English; the terminal shows runinfo.scored_text
            scored += f"; {s.data.sample_note(split)}, --max-steps run" if s.data.sampled else ""
        summary = {"scored_split": split, f"{split}_acc": result["acc"], f"{split}_loss": result["loss"],
                   f"{split}_count": result["count"], f"{split}_scored": scored, "per_class_acc": per_class}
        return summary, {f"hparam/{split}_acc": result["acc"], "hparam/best_val_acc": s.state.best or 0}

    def checkpoint_extra(self, s) -> dict:
        info = s.data.info
        return {"classes": list(info.classes), "mean": list(info.mean), "std": list(info.std)}

    def summary_extra(self, s) -> dict:
        sample = {"eval_sample": {"unit": "images", **s.data.scored}} if s.data.sampled else {}
        return {"model": s.cfg.model, "recipe": s.cfg.recipe, **sample}

    def describe(self, s, notes: list[str]) -> list[str]:
        cfg, data = s.cfg, s.data
        recipe = (_("fast (target {target}%, {device} table)").format(target=cfg.target, device=device_kind(cfg.device))
                  if cfg.recipe == "fast" else cfg.recipe)
        lines = [_("data: {task} from {source}: {train} train, {val} val, {test} test").format(
                     task=cfg.task, source=data.info.source, **data.counts), *notes,
                 s.rt.describe() + "  " + _("model: {model}  recipe: {recipe}  run: {run_dir}").format(
                     model=cfg.model, recipe=recipe, run_dir=s.run_dir)]
        if data.sampled:  # a dry run's numbers must not pass for the whole splits'
            lines.append(_("--max-steps run: validation and test score {sample} (seeded), not the whole splits").format(
                sample=data.sample_note()))
        return lines + ([distributed.describe(cfg.batch_size, "images")] if s.ctx.world.enabled else [])

    def epoch_line(self, r: dict, epochs: int, improved: bool) -> str:
        partial = _(" (partial)") if r.get("partial") else ""
        parts = [_("epoch {epoch}/{epochs}").format(epoch=r["epoch"], epochs=epochs) + partial,
                 _("train loss {loss} acc {acc}").format(loss=f"{r['train_loss']:.4f}", acc=f"{r['train_acc']:.2%}")]
        if "val_acc" in r:
            parts.append(_("val loss {loss} acc {acc}").format(loss=f"{r['val_loss']:.4f}", acc=f"{r['val_acc']:.2%}")
                         + (" *" if improved else ""))
        if "test_acc" in r:
            parts.append(_("test acc {acc}").format(acc=f"{r['test_acc']:.2%}"))
        parts.append(_("{rate} img/s").format(rate=f"{r['images_per_second']:.0f}"))
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
