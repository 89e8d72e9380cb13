"""An exported ONNX image classifier in use without PyTorch's model code (`torchlab predict --backend onnx`).

onnxruntime runs the file; each image is read with torchlab's photo preprocessing at the size, channels and task
stored in the file's metadata (written by torchlab/export.py), and the results have `torchlab predict`'s form.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from torchlab.data.images import open_image, prepare_images, save_inputs
from torchlab.data.photo import PhotoOptions
from torchlab.errors import UserError
from torchlab.export import require_onnx
from torchlab.i18n import _


def onnx_metadata(path: Path) -> tuple[object, dict]:
    """(onnxruntime session, metadata) of an ONNX image classifier exported by `torchlab export`."""
    require_onnx()
    import onnxruntime as ort

    if not path.is_file():
        raise UserError(_("{path}: no such file").format(path=path), _("give a .onnx file from `torchlab export`"))
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for a damaged file
        raise UserError(_("{path}: not a readable ONNX file ({error})").format(path=path, error=str(e).splitlines()[0][:120]),
                        _("give a .onnx file from `torchlab export`")) from None
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get("torchlab.kind") != "image classifier":
        raise UserError(_("{path}: not an image classifier exported by `torchlab export`").format(path=path),
                        _("export one with `torchlab export CKPT --format onnx`"))
    return session, meta


def predict_onnx(path: str | Path, paths: list[str], top_k: int, options: PhotoOptions = PhotoOptions(),
                 show: str | None = None) -> list[dict]:
    """The top_k classes of each image file, with the preprocessing steps, as `torchlab predict` gives them."""
    session, meta = onnx_metadata(Path(path))
    classes = json.loads(meta["classes"])
    images = [open_image(Path(p)) for p in paths]  # all validated before any work
    x, steps = prepare_images(images, int(meta["image_size"]), int(meta["channels"]), meta["task"], options)
    if show:
        save_inputs(x, show)
    probs = torch.from_numpy(session.run(["probabilities"], {"images": x.numpy().astype(np.float32)})[0])
    values, indices = probs.topk(min(top_k, probs.shape[1]))
    results = []
    for name, vs, ixs, done in zip(paths, values, indices, steps):
        results.append({"image": str(name), "top": [{"class": classes[i], "index": int(i), "prob": float(v)}
                                                    for v, i in zip(vs, ixs)], "preprocessing": done,
                        "inverted": bool(done.get("inverted", False))})
    return results
