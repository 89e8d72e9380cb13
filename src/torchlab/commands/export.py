"""`torchlab export CKPT --format onnx|torchscript`: a checkpoint as a file that runs without torchlab's model
code, checked against PyTorch right after it is written (torchlab/export.py)."""

from __future__ import annotations

from torchlab.i18n import _


def add_arguments(p) -> None:
    p.add_argument("checkpoint", help=_("a .pt file (or run directory) from `torchlab train`"))
    p.add_argument("--format", default="onnx", choices=["onnx", "torchscript"],
                   help=_("onnx (onnxruntime and other runtimes) or torchscript (torch.jit.load)"))
    p.add_argument("--out", metavar="FILE",
                   help=_("where to write (default: model.onnx or model.pt beside the checkpoint)"))
    p.add_argument("--force", action="store_true", help=_("replace an existing file"))
    p.add_argument("--data-dir", help=_("folder holding the dataset files"))


def run(args) -> int:
    from torchlab.export import export, parity_text

    path, result = export(args.checkpoint, args.format, args.out, args.force, args.data_dir)
    print(parity_text(result))
    print(_("exported to {path}").format(path=path))
    return 0
