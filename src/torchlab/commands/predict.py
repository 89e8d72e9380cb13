"""`torchlab predict CKPT IMAGE...`: classify image files with a trained checkpoint, read as the dataset was made."""

from __future__ import annotations

import json

from torchlab.data.images import add_photo_flags, photo_options
from torchlab.checks import Bounded
from torchlab.i18n import _


def add_arguments(p) -> None:
    p.add_argument("checkpoint", help=_("a .pt file (or run directory) from `torchlab train`"))
    p.add_argument("images", nargs="+", metavar="IMAGE", help=_("PNG, JPEG, BMP or GIF files, any size and mode"))
    p.add_argument("--top-k", type=int, default=3, action=Bounded, lo=1, help=_("how many classes to show per image"))
    add_photo_flags(p)
    p.add_argument("--show", metavar="OUT.png", help=_("save the model-sized input(s) the model saw, side by side"))
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--json", action="store_true", help=_("print the results as JSON"))


def inversion_text(steps: dict) -> str:
    """Whether the image was negated and why, said either way: a wrong guess shows the model the negative of
    what it was trained on, and `--invert yes|no` overrides it."""
    if "inverted" not in steps:  # colour models read photos as their evaluation did
        return _("not inverted (colour model)")
    return (_("inverted ({why})") if steps['inverted'] else _("not inverted ({why})")).format(why=steps.get('inversion', '?'))


def steps_text(steps: dict) -> str:
    """One short note of what preprocessing did, for the text output (the JSON has every detail)."""
    done = [inversion_text(steps)]
    if steps.get("levels", {}).get("applied"):
        done.append(_("background {level} -> 0").format(level=f"{steps['levels']['background']:.2f}"))
    if steps.get("frame", {}).get("applied"):
        left, top, right, bottom = steps["frame"]["item_box"]
        done.append(_("item {w}x{h} px framed").format(w=right - left, h=bottom - top))
    return f"  [{'; '.join(done)}]"


def run(args) -> int:
    from torchlab import api

    model = api.load(args.checkpoint, args.device)
    if not isinstance(model, api.Classifier):
        model = api.Classifier(model.checkpoint)  # raises the one-line error naming the kind of checkpoint
    results = model.predict(args.images, args.top_k, photo_options(args), args.show)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        print(r["image"] + ": " + ", ".join(f"{t['class']} {t['prob']:.1%}" for t in r["top"])
              + steps_text(r["preprocessing"]))
    if args.show:
        print((_("model inputs saved to {path}") if len(results) > 1 else _("model input saved to {path}"))
              .format(path=args.show))
    return 0