"""torchlab from Python: `train`, `load` and `evaluate`, the functions the `torchlab` command is built on.

    import torchlab
    run = torchlab.train("fashion-mnist", epochs=1, run_dir="runs/first")
    print(run.test, run.history[-1])
    model = torchlab.load(run.run_dir)              # best.pt of the run
    model.predict(["shoe.jpg", pil_image, tensor])  # top classes, read as `torchlab predict` reads photos
    torchlab.evaluate(run.run_dir)                  # the metrics `torchlab eval CKPT --json` prints

Settings are the `torchlab train` flags with underscores (`batch_size=128`,
`recipe="strong"`); bad values raise `torchlab.UserError` with the one-line
message the command prints. Devices are a string ("cpu", "cuda", "auto") or a
torch.device, everywhere.
"""

from __future__ import annotations

import numbers
from pathlib import Path

import torch

from PIL import Image

from torchlab import checkpoint, distributed, logger
from torchlab.checks import violation
from torchlab.config import FIND, resolve, resumed
from torchlab.data.catalog import NAMES
from torchlab.data.images import open_image, tensor_image
from torchlab.data.photo import PhotoOptions
from torchlab.data.text import UNK, join_words, tokenize
from torchlab.errors import UserError
from torchlab.i18n import _
from torchlab.models.gates import Gates, compute_gates
from torchlab.models.registry import CLASSIFIER, LANGUAGE_MODEL, from_checkpoint, kind_of, require_kind
from torchlab.models.sampling import continue_text, next_tokens
from torchlab.runtime import pick_device
from torchlab.scoring import evaluate_checkpoint, language_model, model_inputs, predict_images
from torchlab.tasks import classify, lm
from torchlab.trainer import Context, Run
from torchlab.trainer import train as run_training

__all__ = ["train", "load", "evaluate", "Run", "Classifier", "TextModel", "UserError", "TASKS"]

# Every task `train` knows, by the name the command line uses: one image task per dataset, and `lm`.
TASKS = {**{name: classify.TASK for name in NAMES}, "lm": lm.TASK}


def device_setting(device: str | torch.device) -> str:
    """A device as the config stores it: a torch.device keeps its kind ("cuda", "cpu", "mps")."""
    return device.type if isinstance(device, torch.device) else device


def train(task: str | None = None, *, config: str | None = None, resume: str | Path | None = None,
          quiet: bool | None = None, on_epoch=None, **settings) -> Run:
    """Train a model (or, with `resume`, continue a run) and return the finished Run.

    `task`: fashion-mnist, mnist, cifar10, image-folder or lm. `config`: a TOML file of settings (the
    keyword settings win over it). `resume`: a run directory or checkpoint; only the settings that alter
    no past numbers may then change. `quiet`: no progress output (default: as the command line said).
    `on_epoch(epoch, record)`: called after each whole epoch with its metrics (`val_acc`, `val_ppl`, ...);
    raising torchlab.errors.Pruned there ends the run with status "pruned" and raises it again.
    """
    if "device" in settings:
        settings["device"] = device_setting(settings["device"])
    find_lr = settings.get("lr") == FIND  # lr="find": the range test picks it (lrfind.py)
    if find_lr:
        if resume is not None:
            raise UserError(_("--lr find: a resumed run keeps the learning rate it started with"),
                            _("drop --lr find, or start a new run"))
        del settings["lr"]
    ckpt, run_dir = None, None
    if resume is not None:
        if config:
            raise UserError(_("--config cannot be combined with --resume"), _("a resumed run keeps its saved settings"))
        ckpt = checkpoint.load(Path(resume) / "last.pt" if Path(resume).is_dir() else resume)
        cfg, run_dir = resumed(ckpt["task"], ckpt["train_config"], settings), Path(ckpt["path"]).parent
    else:
        if task is None and not config:
            raise UserError(_("train: name a task ({tasks}) or --resume RUN_DIR").format(tasks=", ".join(TASKS)),
                            _("e.g. `torchlab train fashion-mnist`"))
        cfg = resolve({**settings, **({"task": task} if task else {})}, config)
        if cfg.task not in TASKS:
            raise UserError(_("train: unknown task {task}").format(task=repr(cfg.task)),
                            _("choose one of: {names}").format(names=", ".join(TASKS)))
    with distributed.start(pick_device(cfg.device)) as world:
        if not world.main:
            logger.QUIET = True  # rank 0 speaks for all; errors are still printed, with their rank
        ctx = Context(world, logger.QUIET if quiet is None else quiet)
        return run_training(TASKS[cfg.task], cfg, resume=ckpt, run_dir=run_dir, ctx=ctx, find_lr=find_lr,
                            on_epoch=on_epoch)


def load(path: str | Path, device: str | torch.device = "auto") -> "Classifier | TextModel":
    """A trained model from a checkpoint (or a run directory: its best.pt, else last.pt), ready to use."""
    ckpt = checkpoint.load(path)
    return TextModel(ckpt, device) if kind_of(ckpt) == LANGUAGE_MODEL else Classifier(ckpt, device)


class Classifier:
    """An image classifier from `torchlab train`: `.predict(images)` reads photos as `torchlab predict` does."""

    def __init__(self, ckpt: dict, device: str | torch.device = "auto"):
        require_kind(ckpt, CLASSIFIER, "predict")
        self.checkpoint, self.device = ckpt, pick_device(device)
        self.model = from_checkpoint(ckpt, self.device)
        self.classes: list[str] = list(ckpt["classes"])

    def predict(self, images, top_k: int = 3, options: PhotoOptions | None = None,
                show: str | None = None) -> list[dict]:
        """The `top_k` classes of each image, most likely first, whether it was inverted (negated to a light
        item on black, as the dataset's images are), and the preprocessing applied to it.

        `images`: one or a list of file paths, PIL images and tensors ([C, H, W] or [H, W], floats in
        [0, 1] or uint8; a [N, C, H, W] tensor is N images). `show` saves the model-sized inputs as one PNG.
        """
        if violation(top_k, lo=1):
            raise UserError(_("top_k {top_k}: must be at least 1").format(top_k=top_k), _("e.g. top_k=3"))
        items = list(images) if isinstance(images, (list, tuple)) or is_batch(images) else [images]
        named = [as_image(item, i) for i, item in enumerate(items)]  # every item checked before any work
        results = predict_images(self.model, self.checkpoint, [img for _, img in named], [name for name, _ in named],
                                 self.device, top_k, options or PhotoOptions(), show)
        for r in results:  # stated for every image, true or false: colour models never invert
            r["inverted"] = bool(r["preprocessing"].get("inverted", False))
        return results

    def explain(self, image, target: int | str | None = None, options: PhotoOptions | None = None) -> dict:
        """Which pixels the class of one image rests on (torchlab/explain.py): Grad-CAM on the last convolution
        and input × gradient, for the predicted class or `target` (a class index or name).

        `image`: a file path, PIL image or tensor, read as `predict` reads it. Returns {"image", "class",
        "index", "prob" (the class explained and its probability), "predicted": {"class", "index", "prob"},
        "layer" (where Grad-CAM was taken), "input" (the model-sized input [C, S, S] in [0, 1]), "grad_cam" and
        "input_x_gradient" ([S, S] in [0, 1], CPU tensors), "preprocessing"}. explain.overlay(result["input"],
        result["grad_cam"]) makes the overlay picture; explain.explanation_figure(result) the three panels.
        """
        from torchlab.explain import saliency

        if isinstance(image, (list, tuple)) or is_batch(image):
            raise UserError(_("explain takes one image, not {count}").format(count=len(image)),
                            _("call it once per image"))
        name, img = as_image(image, 0)
        x, steps = model_inputs(self.checkpoint, [img], options or PhotoOptions())  # [1, C, S, S] in [0, 1]
        maps = saliency(self.model, x, self.class_index(target), self.checkpoint["mean"], self.checkpoint["std"])
        probs, index = maps.probs[0], int(maps.target[0])  # [K], the class explained
        top = int(probs.argmax())
        return {"image": name, "class": self.classes[index], "index": index, "prob": float(probs[index]),
                "predicted": {"class": self.classes[top], "index": top, "prob": float(probs[top])},
                "layer": maps.layer, "input": x[0], "grad_cam": maps.grad_cam[0],
                "input_x_gradient": maps.input_x_gradient[0], "preprocessing": steps[0]}

    def class_index(self, target: int | str | None) -> int | None:
        """A class given by index or name, as an index (None stays None: the predicted class)."""
        if target is None:
            return None
        if isinstance(target, str) and target in self.classes:
            return self.classes.index(target)
        if isinstance(target, numbers.Integral) and not isinstance(target, bool) and 0 <= target < len(self.classes):
            return int(target)
        raise UserError(_("target {target}: not a class of this model").format(target=repr(target)),
                        _("give an index from 0 to {last} or a class name: {names}")
                        .format(last=len(self.classes) - 1, names=", ".join(self.classes)))


def is_batch(images) -> bool:
    return isinstance(images, torch.Tensor) and images.dim() == 4


def as_image(item, i: int) -> tuple[str, Image.Image]:
    """(name, PIL image) for a path, a PIL image or a tensor."""
    if isinstance(item, (str, Path)):
        return str(item), open_image(Path(item))
    if isinstance(item, Image.Image):
        return f"image {i}", item
    if isinstance(item, torch.Tensor):
        return f"tensor {i}", tensor_image(item, f"images[{i}]")
    raise UserError(_("images[{i}]: a {type}, not a path, PIL image or tensor").format(i=i, type=type(item).__name__),
                    _("pass file paths, PIL images or image tensors"))


class TextModel:
    """A language model from `torchlab train lm`: continue a prompt, or list the likeliest next tokens."""

    def __init__(self, ckpt: dict, device: str | torch.device = "auto"):
        self.checkpoint, self.device = ckpt, pick_device(device)
        self.model, self.vocab = language_model(ckpt, self.device)

    def encode(self, prompt: str) -> tuple[list[str], list[int], list[str]]:
        """The prompt's tokens, their ids and the tokens the vocabulary lacks (read as <unk>)."""
        if not prompt.strip():
            raise UserError(_("--prompt is empty"), _("give some text to continue, e.g. --prompt 'The Time'"))
        tokens = tokenize(prompt, self.vocab.level)
        return (tokens, *self.vocab.lookup(tokens))

    def generate(self, prompt: str, tokens: int = 50, temperature: float = 0.8, top_k: int = 0,
                 seed: int = 0) -> dict:
        """{"prompt", "text", "new_tokens", "unknown"}: the prompt continued by `tokens` sampled tokens
        (temperature 0: always the likeliest; top_k > 0: only among the k likeliest)."""
        for name, value, lo in (("tokens", tokens, 1), ("temperature", temperature, 0), ("top_k", top_k, 0)):
            if need := violation(value, lo=lo):
                raise UserError(_("--{option} {value}: must be {need}").format(option=name.replace('_', '-'), value=value, need=need),
                                _("see `torchlab generate --help`"))
        words, ids, unknown = self.encode(prompt)
        new = [self.vocab.tokens[i] for i in continue_text(self.model, ids, tokens, temperature, top_k, seed,
                                                           self.device)]
        text = prompt + "".join(new) if self.vocab.level == "char" else join_words(words + new)
        return {"prompt": prompt, "text": text, "new_tokens": new, "unknown": unknown}

    def next_tokens(self, prompt: str, k: int = 5) -> dict:
        """{"prompt", "next": [{"token", "prob"}, ...], "unknown"}: the k likeliest next tokens."""
        if need := violation(k, lo=1):
            raise UserError(_("--next {k}: must be {need}").format(k=k, need=need), _("see `torchlab generate --help`"))
        _words, ids, unknown = self.encode(prompt)
        top = [{"token": self.vocab.tokens[i], "prob": p} for i, p in next_tokens(self.model, ids, k, self.device)]
        return {"prompt": prompt, "next": top, "unknown": unknown}

    def gates(self, prompt: str) -> Gates:
        """What every layer does over the prompt's tokens: the gates (LSTM forget, input, output; GRU update,
        reset), candidates and states, each [T, H], from zeros as generation starts (models/gates.py). A plain
        RNN has only hidden states (`.has_gates` is False); `gate_plot.gate_figure` draws the rest.

        Tokens the vocabulary lacks are refused: the model reads them all as <unk>, so their gates would
        describe <unk>, not them."""
        words, ids, unknown = self.encode(prompt)
        if unknown:
            raise UserError(_("--gates: not in the vocabulary: {tokens}")
                            .format(tokens=" ".join(repr(t) for t in unknown[:20])),
                            _("the model reads them all as {unk}; leave them out of the prompt").format(unk=UNK))
        return compute_gates(self.model, ids, words)


def evaluate(model: "str | Path | Classifier", data_dir: str | None = None, device: str | torch.device = "auto",
             batch_size: int = 1000, out: str | None = None) -> dict:
    """The metrics `torchlab eval CKPT --json` prints: accuracy and loss on the whole test split (val for an image
    folder without test/), per-class accuracy, the confusion matrix (a list of rows) and its PNG (`out`,
    default beside the checkpoint)."""
    ckpt = model.checkpoint if isinstance(model, (Classifier, TextModel)) else checkpoint.load(model)
    result = evaluate_checkpoint(ckpt, data_dir, device_setting(device), batch_size, out)
    return {**result, "confusion": result["confusion"].tolist()}
