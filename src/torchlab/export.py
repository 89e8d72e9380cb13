"""A checkpoint as a file that runs without torchlab's model code: ONNX (onnxruntime) or TorchScript.

Image classifiers are wrapped with their normalisation: the graph takes float images [N, C, H, W] in [0, 1] (what
ToTensor gives) and returns `logits` [N, classes] and their softmax, `probabilities` [N, classes]. Language models
are exported as one step: token ids [N] (int64) and the state h [layers, N, hidden] (and c for an LSTM) in,
`logits` [N, vocab] and the new state out. The batch axis N is dynamic. What a user needs to use the file (classes,
image size, channels, task, the inputs; the vocabulary) travels in the ONNX metadata_props or, for TorchScript, in
the `_extra_files` entry "torchlab.json".

Right after export a parity check runs the saved file (onnxruntime, or the reloaded TorchScript module) against
PyTorch on real inputs; the file is written under a temporary name in the target folder and renamed into place
only when the check passes.
"""

from __future__ import annotations

import importlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from torchlab import checkpoint
from torchlab.data import catalog
from torchlab.data.text import Vocab, tokenize
from torchlab.errors import UserError
from torchlab.i18n import _
from torchlab.models.registry import LANGUAGE_MODEL, from_checkpoint, kind_of

FORMATS = {"onnx": "model.onnx", "torchscript": "model.pt"}
PROB_TOLERANCE = 1e-4  # max abs difference of probabilities allowed between the file and PyTorch
PARITY_IMAGES = 256
LM_PROMPT = "the time traveller said that"  # tokens outside the vocabulary are skipped
LM_STEPS = 8
EXTRA_FILE = "torchlab.json"


# --- the wrapped models -------------------------------------------------------------------------


class ImageClassifier(nn.Module):
    """images [N, C, H, W] in [0, 1] -> (logits, probabilities), the normalisation inside the graph."""

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor):
        logits = self.model((images - self.mean) / self.std)
        return logits, logits.softmax(1)


class LSTMStep(nn.Module):
    """One step of an LSTM language model: (tokens [N], h, c) -> (logits [N, V], h, c)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        logits, (h, c) = self.model(tokens[:, None], (h, c))
        return logits[:, 0], h, c


class Step(nn.Module):
    """One step of an RNN or GRU language model: (tokens [N], h) -> (logits [N, V], h)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, h: torch.Tensor):
        logits, h = self.model(tokens[:, None], h)
        return logits[:, 0], h


@dataclass
class Prepared:
    """What export needs: the wrapped model (eval mode), example inputs, names, the batch axis of each, metadata."""
    module: nn.Module
    example: tuple
    inputs: list[str]
    outputs: list[str]
    batch_axes: dict  # name -> its batch axis, for inputs and outputs
    metadata: dict  # str -> str
    kind: str


def image_classifier(ckpt: dict, model: nn.Module) -> Prepared:
    cfg = ckpt["model_config"]
    channels, size = int(cfg.get("in_channels", len(ckpt["mean"]))), int(cfg.get("image_size", 28))
    meta = {"torchlab.kind": "image classifier", "task": str(ckpt.get("task")), "model": ckpt["model_name"],
            "classes": json.dumps(list(ckpt["classes"]), ensure_ascii=False), "image_size": str(size),
            "channels": str(channels), "mean": json.dumps(list(ckpt["mean"])), "std": json.dumps(list(ckpt["std"])),
            "input": f"images: float32 [N, {channels}, {size}, {size}] in [0, 1] (as ToTensor gives), not normalised",
            "outputs": "logits: [N, classes]; probabilities: softmax of the logits [N, classes]"}
    example = (torch.rand(2, channels, size, size, generator=torch.Generator().manual_seed(0)),)
    return Prepared(ImageClassifier(model, ckpt["mean"], ckpt["std"]).eval(), example, ["images"],
                    ["logits", "probabilities"], {"images": 0, "logits": 0, "probabilities": 0}, meta, "image")


def lm_vocab(ckpt: dict) -> Vocab:
    try:
        return Vocab.from_dict(ckpt["vocab"])
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(_("{path}: not a usable language-model checkpoint ({error})")
                        .format(path=ckpt["path"], error=str(e).splitlines()[0][:120]),
                        _("use a checkpoint written by `torchlab train lm`")) from None


def language_model(ckpt: dict, model: nn.Module) -> Prepared:
    cfg, vocab = model.config, lm_vocab(ckpt)
    lstm = cfg.cell == "lstm"
    states = ["h", "c"] if lstm else ["h"]
    state = f"[{cfg.layers}, N, {cfg.hidden_size}]"
    meta = {"torchlab.kind": "language model", "model": ckpt["model_name"], "cell": cfg.cell, "impl": cfg.impl,
            "layers": str(cfg.layers), "hidden_size": str(cfg.hidden_size), "level": vocab.level,
            "vocab": json.dumps(vocab.tokens, ensure_ascii=False),
            "input": f"tokens: int64 [N]; {' and '.join(states)}: float32 {state}, zeros to start",
            "outputs": f"logits: [N, {cfg.vocab_size}] for the next token; the new {' and '.join(states)}"}
    h = torch.zeros(cfg.layers, 2, cfg.hidden_size)
    example = (torch.tensor([1, 2]), *([h] * len(states)))
    axes = {"tokens": 0, "logits": 0, **{s: 1 for s in states}, **{f"{s}_out": 1 for s in states}}
    wrapper = LSTMStep(model) if lstm else Step(model)
    return Prepared(wrapper.eval(), example, ["tokens", *states], ["logits", *(f"{s}_out" for s in states)], axes,
                    meta, "lm")


def prepare(ckpt: dict) -> Prepared:
    model = from_checkpoint(ckpt, torch.device("cpu"))
    return language_model(ckpt, model) if kind_of(ckpt) == LANGUAGE_MODEL else image_classifier(ckpt, model)


# --- writing the files ----------------------------------------------------------------------------


def require_onnx() -> None:
    try:
        for name in ("onnx", "onnxruntime"):
            importlib.import_module(name)
    except ImportError:
        raise UserError(_("ONNX needs the packages onnx and onnxruntime, which are not installed"),
                        _("pip install 'torchlab[export]'")) from None


def write_onnx(p: Prepared, path: Path) -> None:
    """The legacy TorchScript-based exporter (dynamo=False) with dynamic_axes: for these small models it is fast
    and exact, while the dynamo exporter of torch 2.14 gave wrong LSTM states with a dynamic batch."""
    import onnx

    axes = {name: {axis: "N"} for name, axis in p.batch_axes.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(p.module, p.example, str(path), dynamo=False, input_names=p.inputs,
                          output_names=p.outputs, dynamic_axes=axes, opset_version=17)
    graph = onnx.load(str(path))
    for key, value in p.metadata.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(path))


def write_torchscript(p: Prepared, path: Path) -> None:
    """torch.jit.trace: one step or one batch of images has no data-dependent control flow."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(p.module, p.example, check_trace=False)
        extra = {EXTRA_FILE: json.dumps({**p.metadata, "inputs": p.inputs, "outputs": p.outputs}, ensure_ascii=False)}
        torch.jit.save(traced, str(path), _extra_files=extra)


def runner(fmt: str, path: Path, inputs: list[str]):
    """A function: tuple of input tensors -> list of output tensors, running the saved file."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda args: [torch.from_numpy(o) for o in session.run(None, {n: a.numpy() for n, a in
                                                                             zip(inputs, args)})]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export, and still works
        module = torch.jit.load(str(path), map_location="cpu")

    def run(args):
        with torch.inference_mode():
            return list(module(*args))
    return run


# --- the parity check -------------------------------------------------------------------------------


@dataclass
class Parity:
    max_diff: float  # of probabilities
    agreement: float  # top-1, 0 to 1
    count: int  # images, or tokens
    source: str  # what the inputs were

    def ok(self, tolerance: float = PROB_TOLERANCE) -> bool:
        return self.max_diff <= tolerance and self.agreement == 1.0


def parity_images(ckpt: dict, size: int, channels: int, data_dir: str | None) -> tuple[torch.Tensor, str]:
    """The first test images of the checkpoint's dataset in [0, 1], else a seeded random batch; and which."""
    cfg = ckpt.get("train_config", {})
    try:
        info = catalog.load(ckpt["task"], data_dir or cfg.get("data_dir") or None, size=size, offline=True,
                            val_fraction=cfg.get("val_fraction", 0.2), seed=cfg.get("seed", 0))
        split = info.test if info.test is not None else info.val
        x = split.images[:PARITY_IMAGES].float() / 255
        if x.shape[1:] == (channels, size, size):
            return x, _("the first {n} test images of {task}").format(n=len(x), task=ckpt["task"])
    except (UserError, OSError, KeyError, ValueError):
        pass
    x = torch.rand(64, channels, size, size, generator=torch.Generator().manual_seed(0))
    return x, _("a seeded random batch of {n} images (the dataset was not found)").format(n=len(x))


def compare(ours: torch.Tensor, theirs: torch.Tensor) -> tuple[float, int]:
    """Max abs difference of the softmax of two logits [N, K], and how many rows agree on the top class."""
    p, q = ours.float().softmax(1), theirs.float().softmax(1)
    return float((p - q).abs().max()), int((p.argmax(1) == q.argmax(1)).sum())


def image_parity(p: Prepared, run, x: torch.Tensor, source: str) -> Parity:
    with torch.inference_mode():
        ref = p.module(x)[0]
    diff, same = compare(ref, run((x,))[0])
    return Parity(diff, same / len(x), len(x), source)


def prompt_ids(vocab: Vocab) -> tuple[list[int], str]:
    """The tokens of LM_PROMPT that the vocabulary has, else its most frequent tokens."""
    ids = [vocab.index[t] for t in tokenize(LM_PROMPT, vocab.level) if t in vocab.index][:LM_STEPS]
    if len(ids) >= 3:
        return ids, _("the prompt {prompt}").format(prompt=repr(LM_PROMPT))
    ids = list(range(1, min(len(vocab.tokens), LM_STEPS + 1))) or [0]
    return ids, _("the vocabulary's {n} most frequent tokens").format(n=len(ids))


def lm_parity(p: Prepared, run, ids: list[int], source: str) -> Parity:
    """The prompt fed token by token to both, each carrying its own state, as a batch of 3 shifted copies."""
    steps = torch.tensor([ids[i:] + ids[:i] for i in range(3)]).T  # [T, 3]
    h = torch.zeros(p.example[1].shape[0], 3, p.example[1].shape[2])  # [layers, 3, hidden]
    ours = theirs = [h] * (len(p.inputs) - 1)
    worst, same = 0.0, 0
    for tokens in steps:
        with torch.inference_mode():
            ref = p.module(tokens, *ours)
        got = run((tokens, *theirs))
        diff, agree = compare(ref[0], got[0])
        worst, same = max(worst, diff), same + agree
        ours, theirs = list(ref[1:]), list(got[1:])
    return Parity(worst, same / steps.numel(), steps.numel(), source)


def parity(ckpt: dict, p: Prepared, fmt: str, path: Path, data_dir: str | None) -> Parity:
    run = runner(fmt, path, p.inputs)
    if p.kind == "lm":
        return lm_parity(p, run, *prompt_ids(lm_vocab(ckpt)))
    channels, size = int(p.metadata["channels"]), int(p.metadata["image_size"])
    return image_parity(p, run, *parity_images(ckpt, size, channels, data_dir))


# --- the command's steps ----------------------------------------------------------------------------


def target(ckpt_path: Path, fmt: str, out: str | None, force: bool) -> Path:
    """Where the file goes, checked before any work: a writable folder, nothing replaced without --force."""
    if fmt not in FORMATS:
        raise UserError(_("--format {fmt}: unknown").format(fmt=repr(fmt)),
                        _("choose one of: {names}").format(names=", ".join(FORMATS)))
    path = Path(out) if out else ckpt_path.parent / FORMATS[fmt]
    if path.is_dir():
        path = path / FORMATS[fmt]
    if not path.parent.is_dir():
        raise UserError(_("--out {path}: folder {folder} does not exist").format(path=path, folder=path.parent),
                        _("create it first, or choose another place"))
    if not os.access(path.parent, os.W_OK):
        raise UserError(_("--out {path}: folder {folder} is not writable").format(path=path, folder=path.parent),
                        _("choose a writable place with --out"))
    if path.exists() and not force:
        raise UserError(_("--out {path}: already exists").format(path=path),
                        _("pass --force to replace it, or choose another file with --out"))
    return path


def export(ckpt_path: str | Path, fmt: str = "onnx", out: str | None = None, force: bool = False,
           data_dir: str | None = None) -> tuple[Path, Parity]:
    """Export a checkpoint (see the module's docstring); returns the file written and its parity check."""
    if fmt == "onnx":
        require_onnx()
    ckpt = checkpoint.load(ckpt_path)
    path = target(Path(ckpt["path"]), fmt, out, force)
    p = prepare(ckpt)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        (write_onnx if fmt == "onnx" else write_torchscript)(p, tmp)
        result = parity(ckpt, p, fmt, tmp, data_dir)
        if not result.ok():
            raise UserError(mismatch_text(result), _("the file was not kept; please report this model"))
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(_("--out {path}: cannot write ({error})").format(path=path, error=e.strerror or e),
                        _("choose a writable place with --out")) from None
    finally:
        tmp.unlink(missing_ok=True)
    return path, result


def parity_text(r: Parity) -> str:
    return (_("parity on {source}: max abs difference of probabilities {diff}, top-1 agreement {agree} ({n} compared)")
            .format(source=r.source, diff=f"{r.max_diff:.2e}", agree=f"{r.agreement:.2%}", n=r.count))


def mismatch_text(r: Parity) -> str:
    return _("export does not match PyTorch: max abs difference of probabilities {diff} (tolerance {tol}), top-1 "
             "agreement {agree}").format(diff=f"{r.max_diff:.2e}", tol=f"{PROB_TOLERANCE:.0e}",
                                         agree=f"{r.agreement:.2%}")
