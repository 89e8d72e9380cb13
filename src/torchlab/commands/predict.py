"""`torchlab predict CKPT IMAGE...`: classify image files with a trained checkpoint, read as the dataset was made;
`--explain OUT.png` saves why the model chose its class for one image (torchlab/explain.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from torchlab.data.images import add_photo_flags, photo_options
from torchlab.data.photo import reason_text
from torchlab.checks import Bounded
from torchlab.errors import UserError
from torchlab.i18n import _


def add_arguments(p) -> None:
    p.add_argument("checkpoint", help=_("a .pt file (or run directory) from `torchlab train`"))
    p.add_argument("images", nargs="+", metavar="IMAGE", help=_("PNG, JPEG, BMP or GIF files, any size and mode"))
    p.add_argument("--top-k", type=int, default=3, action=Bounded, lo=1, help=_("how many classes to show per image"))
    add_photo_flags(p)
    p.add_argument("--show", metavar="OUT.png", help=_("save the model-sized input(s) the model saw, side by side"))
    p.add_argument("--explain", metavar="OUT.png",
                   help=_("save why the model chose its class for one IMAGE: the input it saw, Grad-CAM, input × gradient"))
    p.add_argument("--force", action="store_true", help=_("replace an existing --explain file"))
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--json", action="store_true", help=_("print the results as JSON"))
    p.add_argument("--backend", default="torch", choices=["torch", "onnx"],
                   help=_("onnx: CHECKPOINT is a .onnx file from `torchlab export`, run by onnxruntime"))


def inversion_text(steps: dict) -> str:
    """Whether the image was negated and why, said either way: a wrong guess shows the model the negative of
    what it was trained on, and `--invert yes|no` overrides it."""
    if "inverted" not in steps:  # colour models read photos as their evaluation did
        return _("not inverted (colour model)")
    why = reason_text(steps["inversion_rule"], _) if "inversion_rule" in steps else steps.get("inversion", "?")
    return (_("inverted ({why})") if steps["inverted"] else _("not inverted ({why})")).format(why=why)


def steps_text(steps: dict) -> str:
    """One short note of what preprocessing did, for the text output (the JSON has every detail)."""
    done = [inversion_text(steps)]
    if steps.get("levels", {}).get("applied"):
        done.append(_("background {level} -> 0").format(level=f"{steps['levels']['background']:.2f}"))
    if steps.get("frame", {}).get("applied"):
        left, top, right, bottom = steps["frame"]["item_box"]
        done.append(_("item {w}x{h} px framed").format(w=right - left, h=bottom - top))
    return f"  [{'; '.join(done)}]"


def explain_target(out: str, images: list[str], force: bool) -> Path:
    """Where --explain writes, checked before any work: one image, a .png in an existing folder, and no file
    replaced without --force."""
    path = Path(out)
    if len(images) > 1:  # one figure explains one decision; a loop in the shell explains several
        raise UserError(_("--explain explains one IMAGE, not {count}").format(count=len(images)),
                        _("run predict once per image, each with its own --explain file"))
    if path.suffix.lower() != ".png":
        raise UserError(_("--explain {path}: must be a .png file").format(path=path), _("e.g. --explain why.png"))
    if not path.parent.is_dir():
        raise UserError(_("--explain {path}: folder {folder} does not exist").format(path=path, folder=path.parent),
                        _("create it first, or choose another place"))
    if path.is_dir():
        raise UserError(_("--explain {path}: is a folder").format(path=path), _("give a file name, e.g. --explain why.png"))
    if path.exists() and not force:
        raise UserError(_("--explain {path}: already exists").format(path=path),
                        _("pass --force to replace it, or choose another file"))
    return path


def save_explanation(model, image: str, options, path: Path) -> None:
    """The three panels of explain.explanation_figure as a PNG, written whole or not at all."""
    from torchlab.explain import explanation_figure

    fig = explanation_figure(model.explain(image, options=options))
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(_("--explain {path}: cannot write ({error})").format(path=path, error=e.strerror or e),
                        _("choose a writable place")) from None


def run(args) -> int:
    from torchlab import api

    explain = explain_target(args.explain, args.images, args.force) if args.explain else None
    if args.backend == "onnx":
        results = onnx_results(args, explain)
    else:
        model = api.load(args.checkpoint, args.device)
        if not isinstance(model, api.Classifier):
            if explain:
                raise UserError(_("--explain needs an image classifier, and {path} holds a language model ({model})")
                                .format(path=args.checkpoint, model=model.checkpoint["model_name"]),
                                _("explain a checkpoint from `torchlab train IMAGE-TASK`"))
            model = api.Classifier(model.checkpoint)  # raises the one-line error naming the kind of checkpoint
        results = model.predict(args.images, args.top_k, photo_options(args), args.show)
    if explain:
        save_explanation(model, args.images[0], photo_options(args), explain)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        print(r["image"] + ": " + ", ".join(f"{t['class']} {t['prob']:.1%}" for t in r["top"])
              + steps_text(r["preprocessing"]))
    if args.show:
        print((_("model inputs saved to {path}") if len(results) > 1 else _("model input saved to {path}"))
              .format(path=args.show))
    if explain:
        print(_("explanation saved to {path}").format(path=explain))
    return 0


def onnx_results(args, explain) -> list[dict]:
    """--backend onnx: the exported file run by onnxruntime (torchlab/exported.py), no PyTorch model code."""
    from torchlab.exported import predict_onnx

    if explain:
        raise UserError(_("--explain needs the PyTorch model, not --backend onnx"),
                        _("pass the checkpoint .pt without --backend onnx"))
    return predict_onnx(args.checkpoint, args.images, args.top_k, photo_options(args), args.show)
