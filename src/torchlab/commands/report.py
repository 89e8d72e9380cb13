"""`torchlab report RUN_DIR`: one self-contained HTML page about a run.

The page holds the command and resolved config, the final metrics (copied
from summary.json, never recomputed), the training curves, and per task:
for classifiers the confusion matrix, per-class accuracy and the test images
the model got most confidently wrong, each with the Grad-CAM overlay of its
predicted class (the saved model rescored on the split); for language models the perplexity curves and continuations of
prompts taken from the test text, next to what the text really says.
"""

from __future__ import annotations

import math
import sys
import webbrowser
from pathlib import Path

import torch

from torchlab import checkpoint, html, runinfo
from torchlab.errors import UserError
from torchlab.explain import overlay
from torchlab.i18n import _
from torchlab.logger import progress, say

GALLERY = 24  # confidently wrong test images shown
# Below this many epochs a curve per epoch is a dot or two: draw the logged training loss per step instead.
FEW_EPOCHS = 5


def add_arguments(p) -> None:
    p.add_argument("run_dir", help=_("a run directory from `torchlab train`"))
    p.add_argument("--out", help=_("where to write the page (default: RUN_DIR/report.html)"))
    p.add_argument("--data-dir", help=_("folder holding the dataset (default: the one the run used)"))
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--open", action="store_true", help=_("open the page in the default browser"))


def pyplot():
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:  # a notebook keeps its inline backend
        matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    return plt


def ppl(loss: float) -> float:
    return math.exp(min(loss, 50.0))  # capped as evaluate_lm caps it


def per_step(history: list[dict], loss_log: list) -> bool:
    """Whether to draw against steps: a short run (few epochs) whose training loss was logged more often."""
    return len({h["epoch"] for h in history}) < FEW_EPOCHS and len(loss_log) > len(history)


def curves(history: list[dict], lm: bool, loss_log: list | None = None) -> str:
    """Loss and accuracy (or perplexity), train against val (and test when scored every epoch): per epoch, or
    for a short run per step, with the logged training loss as a line and the validations as points."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    steps = per_step(history, loss_log or [])
    x = [h["step"] if steps else h["epoch"] for h in history]
    metric = "ppl" if lm else "acc"
    if steps:
        logged, losses = zip(*loss_log)
        axes[0].plot(logged, losses, label="train (logged steps)")
        if lm:
            axes[1].plot(logged, [ppl(v) for v in losses], label="train (logged steps)")
    for split in ("val", "test") if steps else ("train", "val", "test"):
        plot_split(axes, x, history, split, metric, lm)
    if steps and not lm:
        plot_split(axes[1:], x, history, "train", metric, lm, skip_loss=True)  # accuracy per (partial) epoch
    axes[0].set_title("loss (mean per " + ("token)" if lm else "image)"))
    axes[1].set_title("perplexity (lower is better)" if lm else "accuracy")
    if lm:
        axes[1].set_yscale("log")
    for ax in axes:
        label_x(ax, x, steps)
    fig.tight_layout()
    return html.image(html.figure_uri(fig), "training curves")


def plot_split(axes, x: list, history: list[dict], split: str, metric: str, lm: bool, skip_loss: bool = False):
    """One split's loss (left) and accuracy or perplexity (right) at each record; train perplexity comes
    from the training loss."""
    losses = [h.get(f"{split}_loss") for h in history]
    if not skip_loss and any(v is not None for v in losses):
        axes[0].plot(x, losses, marker="o", label=split)
    values = [ppl(h["train_loss"]) if lm and split == "train" else h.get(f"{split}_{metric}") for h in history]
    if any(v is not None for v in values):
        axes[-1].plot(x, values, marker="o", label=split)


def label_x(ax, x: list, steps: bool) -> None:
    if not steps and len(x) <= 12:  # epochs are whole numbers
        ax.set_xticks(x)
    else:
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("step (points: end of an epoch, or of a --max-steps run)" if steps else "epoch")
    ax.grid(alpha=0.3)
    ax.legend()


def metrics_table(summary: dict, lm: bool) -> str:
    """The run's own numbers, each with its exact value in data-value."""
    pct = (lambda v: f"{v:.2%}") if not lm else (lambda v: f"{v:.3f}")
    rows = []
    for key in ("best_val_acc", "best_val_ppl", "test_acc", "test_ppl", "val_acc", "test_loss", "val_loss"):
        value = summary.get(key)
        if value is not None and (key != "val_acc" or summary.get("scored_split") == "val"):
            text = pct(value) if key.endswith(("acc", "ppl")) else f"{value:.4f}"
            rows.append([key.replace("_", " "), (text, value)])
    for key, unit in (("epochs", ""), ("steps", ""), ("best_epoch", ""), ("train_seconds", " s"),
                      ("images_per_second", " img/s"), ("tokens_per_second", " tokens/s")):
        if key == "epochs" and summary.get("epochs_done") not in (None, summary.get("epochs")):
            done = summary["epochs_done"]  # --max-steps stopped inside an epoch
            rows.append(["epochs", (f"{runinfo.epochs_text(summary)} (epoch {summary['epochs'] + 1} partial)", done)])
        elif summary.get(key) is not None:
            rows.append([key.replace("_", " "), (f"{summary[key]:,}{unit}", summary[key])])
    scored = summary.get("test_scored") or summary.get(f"{summary.get('scored_split', 'test')}_scored")
    note = f"<p>Scored with the weights of the {html.escape(scored)}.</p>" if scored else ""
    return html.table(["metric", "value"], rows, numeric={1}) + note


def epochs_table(history: list[dict]) -> str:
    keys = [k for k in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_ppl", "test_acc", "train_seconds")
            if any(k in h for h in history)]
    fmt = lambda k, v: "" if v is None else (f"{v:.2%}" if k.endswith("acc") else f"{v:.4f}" if isinstance(v, float)
                                             else str(v))
    rows = [[(fmt(k, h.get(k)), h.get(k)) for k in keys] for h in history]
    return html.table([k.replace("_", " ") for k in keys], rows, numeric=set(range(len(keys))))


def classifier_sections(ckpt: dict, summary: dict, data_dir: str | None, device: str) -> list[tuple[str, str]]:
    """Rescore the saved model on the split the run was scored on: confusion, per class, confident mistakes."""
    from torchlab.engine import per_class_accuracy
    from torchlab.logger import confusion_figure
    from torchlab.scoring import score_checkpoint

    # As the run scored it; checkpoints that do not say are from before 256 became the default.
    batch = ckpt.get("train_config", {}).get("eval_batch_size", 1000)
    result, split, data, _ = score_checkpoint(ckpt, data_dir, device, batch, keep=True)
    probs = result["logprobs"].exp()  # [N, K], in split order
    classes = list(ckpt["classes"])
    confusion, acc = result["confusion"], result["acc"]
    expected = summary.get(f"{split}_acc")
    if summary.get("eval_sample"):  # a --max-steps run scored a sample; this is the whole split
        differs = f"the run reported {expected:.2%} on a sample of {summary.get(f'{split}_count', 0):,} images"
    else:
        differs = f"the run reported {expected:.2%}: the data or the weights changed since"
    check = (f"<p>Rescored here: {acc:.2%} on {len(data):,} images"
             + ("" if expected is None or abs(acc - expected) < 1e-9 else f' <span class="note">({differs})</span>')
             + ".</p>")
    per_class = per_class_accuracy(confusion)
    rows = [[name, (f"{a:.2%}", a), (f"{int(confusion[i].sum()):,}", int(confusion[i].sum()))]
            for i, (name, a) in enumerate(zip(classes, per_class))]
    return [
        (f"Confusion matrix ({split} set)", check + html.image(html.figure_uri(
            confusion_figure(confusion, classes, f"{ckpt['task']} {split}")), "confusion matrix")),
        ("Accuracy per class", html.table(["class", "accuracy", "images"], rows, numeric={1, 2})),
        ("Most confidently wrong", wrong_gallery(data, probs, classes, ckpt, device)),
    ]


def wrong_gallery(data, probs: torch.Tensor, classes: list[str], ckpt: dict, device: str) -> str:
    """The mistakes made with the highest predicted probability, each titled with its true and predicted class,
    and beside it the Grad-CAM overlay of the predicted class: where the model found its wrong answer."""
    conf, pred = probs.max(1)
    wrong = (pred != data.labels).nonzero().flatten()
    if not len(wrong):
        return "<p>No mistakes on this split.</p>"
    order = wrong[conf[wrong].argsort(descending=True)][:GALLERY]
    pixels = as_pixels(data.images[order])  # [n, C, H, W] in [0, 1]
    heat = predicted_class_cams(ckpt, pixels, pred[order], device)  # [n, H, W] in [0, 1]
    plt = pyplot()
    pairs = 4  # image and overlay side by side, 4 pairs a row
    rows = math.ceil(len(order) / pairs)
    fig, axes = plt.subplots(rows, 2 * pairs, figsize=(2 * pairs * 1.45, rows * 1.75), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, i in enumerate(order.tolist()):
        shown, heated = axes.flat[2 * k], axes.flat[2 * k + 1]
        img = pixels[k].permute(1, 2, 0).numpy()  # CHW -> HWC for imshow
        shown.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray" if img.shape[2] == 1 else None,
                     vmin=0, vmax=1)
        shown.set_title(f"true {classes[data.labels[i]]}\npred {classes[pred[i]]} {conf[i]:.1%}", fontsize=7)
        heated.imshow(overlay(pixels[k], heat[k]))
        heated.set_title("Grad-CAM", fontsize=7)
    fig.tight_layout()
    return (f"<p>{len(wrong):,} of {len(data):,} images are wrong; the {len(order)} the model was surest of, each "
            "beside the Grad-CAM of its predicted class (red: the regions that class rests on most):</p>"
            + html.image(html.figure_uri(fig), "confidently wrong test images, each with its Grad-CAM overlay"))


def as_pixels(images: torch.Tensor) -> torch.Tensor:
    """A split's images (uint8 [N, C, H, W], 0-255) as floats in [0, 1], as the model's normalisation expects."""
    return images.float() / 255 if images.dtype == torch.uint8 else images.float()


def predicted_class_cams(ckpt: dict, pixels: torch.Tensor, predicted: torch.Tensor, device: str) -> torch.Tensor:
    """Grad-CAM [N, H, W] of each image's predicted class, from the saved model (torchlab/explain.py)."""
    from torchlab.explain import saliency
    from torchlab.models.registry import from_checkpoint
    from torchlab.runtime import pick_device

    model = from_checkpoint(ckpt, pick_device(device))
    return saliency(model, pixels, predicted, ckpt["mean"], ckpt["std"]).grad_cam


def lm_samples(ckpt: dict, cfg: dict, device: str) -> str:
    """Three prompts from the test text, continued by the model, beside the text's own continuation."""
    from torchlab.config import LMTrainConfig
    from torchlab.data.corpora import split_corpus
    from torchlab.models.sampling import continue_text
    from torchlab.runtime import pick_device
    from torchlab.scoring import language_model

    dev = pick_device(device)
    model, vocab = language_model(ckpt, dev, "report")
    c = LMTrainConfig(**cfg)  # the run's settings, with today's defaults for any it does not record
    _, splits = split_corpus(c.corpus, c.data_dir, c.script, c.encoding, c.level, c.seed)
    test = splits.test
    if not test:
        return "<p>The test split is empty: no prompts to take.</p>"
    words = vocab.level == "word"
    prompt_len, new_len = (12, 30) if words else (40, 120)
    prompt_len = max(1, min(prompt_len, len(test) // 2))  # a short test text gets short prompts
    rows = []
    for j, frac in enumerate((0.1, 0.5, 0.9)):
        start = int((len(test) - prompt_len) * frac)
        if not words:  # begin at a word: just after the next space, if one is near
            spaces = [k for k in range(start, min(start + 20, len(test) - prompt_len)) if test[k].isspace()]
            start = spaces[0] + 1 if spaces else start
        prompt = test[start:start + prompt_len]
        truth = test[start + prompt_len:start + prompt_len + new_len]
        new = continue_text(model, vocab.lookup(prompt)[0], new_len, 0.8, 0, j, dev)
        rows.append((vocab.decode(vocab.lookup(prompt)[0]), vocab.decode(new), vocab.decode(vocab.lookup(truth)[0])))
    parts = [f'<p class="sample"><b>{html.escape(p)}</b>{html.escape(g)}</p><p>the text goes on: '
             f"<i>{html.escape(t)}</i></p>" for p, g, t in rows]
    return ("<p>Prompts (in bold) from the test text, continued at temperature 0.8 (seeds 0, 1, 2; "
            "unknown tokens shown as &lt;unk&gt;).</p>" + "".join(parts))


def build(run_dir: Path, data_dir: str | None, device: str) -> str:
    """The whole page for one run (a run that failed before its first checkpoint gets one without the model)."""
    summary = runinfo.read(run_dir)
    ckpt_path = next((run_dir / n for n in ("best.pt", "last.pt") if (run_dir / n).exists()), None)
    ckpt = checkpoint.load(ckpt_path) if ckpt_path else None
    lm = summary.get("task") == "lm"
    history = summary.get("history") or (ckpt["state"].get("history", []) if ckpt else [])
    name = f"{summary.get('cell')} language model on {summary.get('corpus')}" if lm else \
        f"{summary.get('model')} on {summary.get('task')}"
    bar = progress(2, "report", "part")
    sections = [("", head_html(summary, name, ckpt_path if ckpt else None)),
                ("Command", f"<pre>{html.escape(summary.get('command') or '(not recorded)')}</pre>"),
                ("Final metrics", metrics_table(summary, lm)),
                ("Training curves", curves(history, lm, summary.get("loss_log")) if history else
                 "<p>No epoch finished.</p>")]
    bar.update(1)
    sections += task_sections(ckpt, summary, data_dir, device, lm) if ckpt else []
    bar.update(1)
    bar.close()
    config = (run_dir / "config.toml").read_text(encoding="utf-8")
    sections += [("Epochs", epochs_table(history) if history else "<p>None yet.</p>"),
                 ("Configuration (config.toml)", f"<pre>{html.escape(config)}</pre>")]
    return html.page(f"torchlab report: {run_dir.name}", sections)


def head_html(summary: dict, name: str, ckpt_path) -> str:
    """How the run ended, its error, and how to continue it (a --max-steps run: finish it)."""
    how = "" if summary["shown"] == summary.get("status") else f" ({summary.get('status')})"
    next_step = "Finish it (--max-steps 0 lifts the limit) with" if summary["shown"] == "max-steps" else \
        "Continue it with"
    started = html.escape(str(summary.get("started", "?")))
    return (f"<p>{html.escape(name)}: <b>{summary['shown']}</b>{html.escape(how)}, started {started}, "
            f"checkpoint {ckpt_path.name if ckpt_path else 'none'}.</p>"
            + (f'<p class="note">{html.escape(summary["error"])}</p>' if summary.get("error") else "")
            + sample_note(summary.get("eval_sample"))
            + (f"<p>{next_step} <code>{html.escape(summary['resume'])}</code></p>" if summary["resume"] else ""))


def sample_note(sample: dict | None) -> str:
    """A --max-steps run's numbers are on a sample of the evaluation splits: the page says so."""
    if not sample:
        return ""
    sizes = " and ".join(f"{n:,} {split}" for split, n in sample.items() if split != "unit")
    return f'<p class="note">A --max-steps run: it scored a sample of {sizes} {sample["unit"]}, not the whole ' \
           'splits.</p>'


def task_sections(ckpt, summary, data_dir, device, lm) -> list[tuple[str, str]]:
    """The sections that need the data; without it the page says why they are missing."""
    try:
        if lm:
            cfg = dict(ckpt["train_config"], **({"data_dir": data_dir} if data_dir else {}))
            return [("Generated samples", lm_samples(ckpt, cfg, device))]
        return classifier_sections(ckpt, summary, data_dir, device)
    except UserError as e:
        say(_("warning: report without the test-set sections: {error}").format(error=e))
        return [("Test set", f'<p class="note">Left out: {html.escape(str(e))}. Point --data-dir at the data.</p>')]


def target_path(run_dir: Path, out: str | None) -> Path:
    """Where to write; an existing file is replaced only when it is an earlier torchlab report."""
    path = Path(out) if out else run_dir / "report.html"
    if path.is_dir():
        raise UserError(_("--out {path}: is a directory").format(path=path), _("give a file name, e.g. --out report.html"))
    if path.exists():
        try:
            ours = html.GENERATOR in path.read_text(encoding="utf-8", errors="replace")[:600]
        except OSError:
            ours = False
        if not ours:
            raise UserError(_("--out {path}: exists and is not a torchlab report").format(path=path), _("choose another --out"))
    return path


def run(args) -> int:
    run_dir = Path(args.run_dir)
    if not runinfo.is_run(run_dir):
        raise UserError(_("{run_dir}: not a run directory (no config.toml with summary.json or last.pt)").format(run_dir=run_dir),
                        _("give a folder written by `torchlab train`; `torchlab runs` lists them"))
    path = target_path(run_dir, args.out)
    page = build(run_dir, args.data_dir, args.device)
    try:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(page, encoding="utf-8")
        tmp.replace(path)
    except OSError as e:
        raise UserError(_("--out {path}: cannot write ({error})").format(path=path, error=e.strerror),
                        _("choose a writable place with --out")) from None
    print(f"report: {path}")
    if args.open and not webbrowser.open(path.resolve().as_uri()):
        say(_("no browser found here; open {path} yourself").format(path=path))
    return 0
