"""`torchlab eval CKPT`: score a checkpoint on its whole test split, or (`--corruptions`) on corrupted photos."""

from __future__ import annotations

import json

from torchlab.checks import Bounded
from torchlab.data.images import add_photo_flags, photo_options
from torchlab.i18n import _


def add_arguments(p) -> None:
    p.add_argument("checkpoint", help=_("a .pt file (or run directory) from `torchlab train`"))
    p.add_argument("--data-dir", help=_("folder holding the dataset files"))
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--batch-size", type=int, default=1000, action=Bounded, lo=1, help=_("images per step (does not change results)"))
    p.add_argument("--out", help=_("where to write the confusion matrix PNG (default: beside the checkpoint)"))
    p.add_argument("--json", action="store_true", help=_("print the results as JSON"))
    group = p.add_argument_group(_("corruptions (grayscale datasets)"))
    group.add_argument("--corruptions", action="store_true",
                       help=_("instead: accuracy on test images corrupted as photos are (blur, noise, JPEG, paper, "
                            "rotation, ...; 3 severities each), read the way `predict` reads a photo"))
    group.add_argument("--images", type=int, default=1000, action=Bounded, lo=1, help=_("test images sampled for --corruptions"))
    group.add_argument("--seed", type=int, default=0, help=_("seed of the sample and the corruptions"))
    add_photo_flags(group)


def eval_text(r: dict) -> str:
    import torch

    from torchlab.logger import format_confusion

    split = r["split"]
    lines = [_("{checkpoint} ({task}, {model}): {split} accuracy {acc} on {count} images, loss {loss}")
             .format(checkpoint=r['checkpoint'], task=r['task'], model=r['model'], split=split,
                     acc=f"{r[split + '_acc']:.2%}", count=r['count'], loss=f"{r[split + '_loss']:.4f}"),
             _("per-class accuracy:")]
    lines += [f"  {name:<12} {acc:.2%}" for name, acc in r["per_class_acc"].items()]
    lines += [_("confusion matrix (rows: true class, columns: predicted):"),
              format_confusion(torch.tensor(r["confusion"]), list(r["per_class_acc"])),
              _("confusion matrix image: {path}").format(path=r['confusion_png'])]
    return "\n".join(lines)


def run(args) -> int:
    from torchlab import api, checkpoint

    if args.corruptions:
        return corruption_eval(checkpoint.load(args.checkpoint), args)
    result = api.evaluate(args.checkpoint, args.data_dir, args.device, args.batch_size, args.out)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(eval_text(result))
    return 0


def corruption_eval(ckpt: dict, args) -> int:
    from torchlab import scoring

    result = scoring.corruption_table(ckpt, args.data_dir, args.device, args.images, args.seed, photo_options(args))
    result["test_acc"] = scoring.full_test_accuracy(ckpt, args.data_dir, args.device)
    print(json.dumps(result, indent=2) if args.json else scoring.table_text(result))
    return 0
