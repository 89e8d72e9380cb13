"""`torchlab export`: every registry model to ONNX and TorchScript with a dynamic batch and a parity check;
`predict --backend onnx` agrees with `predict`; bad input is one line and exit 2, and nothing is left behind."""

from __future__ import annotations

import json

import onnx
import pytest
import torch

from tests.commands.test_predict import block
from tests.conftest import TINY, error_line, write_dataset
from torchlab import export as ex
from torchlab.cli import main
from torchlab.data.text import Vocab
from torchlab.models.registry import MODELS, build_model

pytestmark = pytest.mark.usefixtures("one_thread")
LM = {"embed_size": 8, "hidden_size": 16, "layers": 2, "dropout": 0.3}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    data = write_dataset(tmp / "data")
    assert main(["train", "fashion-mnist", "--data-dir", str(data), *TINY, "--max-steps", "2", "--run-dir",
                 str(tmp / "run"), "--quiet"]) == 0
    return tmp / "run" / "best.pt"


def fake_checkpoint(trained, folder, name: str, config: dict, **changes):
    """The trained checkpoint with another model (fresh weights) in it, saved in its own folder."""
    ckpt = torch.load(trained, weights_only=True)
    model = build_model(name, config)
    ckpt.update(model_name=name, model_config=config, model_state=model.state_dict(), **changes)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, folder / "best.pt")
    return folder / "best.pt"


def lm_checkpoint(trained, folder, cell: str, impl: str):
    vocab = Vocab(["<unk>", " ", "e", "t", "h", "i", "m", "r", "a", "v", "l", "s", "d"], "char")
    config = {"vocab_size": len(vocab.tokens), "cell": cell, "impl": impl, **LM}
    return fake_checkpoint(trained, folder, f"lm-{cell}", config, task="lm", vocab=vocab.to_dict())


def check_batches(path, fmt: str, p: ex.Prepared):
    """The saved file runs batches of 1 and 7 and matches the PyTorch module."""
    run = ex.runner(fmt, path, p.inputs)
    for n in (1, 7):
        g = torch.Generator().manual_seed(n)
        if p.kind == "lm":
            layers, _, hidden = p.example[1].shape
            args = (torch.randint(0, 13, (n,), generator=g),
                    *(torch.randn(layers, n, hidden, generator=g) for _ in p.inputs[1:]))
        else:
            args = (torch.rand(n, *p.example[0].shape[1:], generator=g),)
        got = run(args)
        with torch.inference_mode():
            ref = p.module(*args)
        assert [tuple(o.shape) for o in got] == [tuple(r.shape) for r in ref]
        assert all(torch.allclose(o, r, atol=1e-5) for o, r in zip(got, ref))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("name", [*MODELS, "lm-rnn-torch", "lm-lstm-torch", "lm-gru-torch", "lm-rnn-scratch",
                                  "lm-lstm-scratch", "lm-gru-scratch"])
def test_every_model_exports_with_parity_and_a_dynamic_batch(trained, tmp_path, name, fmt):
    if name.startswith("lm-"):
        _, cell, impl = name.split("-")
        ckpt_path = lm_checkpoint(trained, tmp_path / "run", cell, impl)
    else:
        ckpt_path = fake_checkpoint(trained, tmp_path / "run", name,
                                    {"in_channels": 1, "num_classes": 10, "image_size": 28})
    path, result = ex.export(ckpt_path, fmt)
    assert path == tmp_path / "run" / ex.FORMATS[fmt] and result.ok() and result.agreement == 1.0
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(["best.pt", path.name])  # no temporary left
    p = ex.prepare(torch.load(ckpt_path, weights_only=True) | {"path": str(ckpt_path)})
    check_batches(path, fmt, p)
    meta = metadata(path, fmt)
    if name.startswith("lm-"):
        assert json.loads(meta["vocab"])[:3] == ["<unk>", " ", "e"] and meta["cell"] == cell
        assert "prompt" in result.source
    else:
        assert meta["image_size"] == "28" and meta["channels"] == "1" and meta["task"] == "fashion-mnist"
        assert len(json.loads(meta["classes"])) == 10 and "test images of fashion-mnist" in result.source


def metadata(path, fmt: str) -> dict:
    if fmt == "onnx":
        return {m.key: m.value for m in onnx.load(str(path)).metadata_props}
    extra = {ex.EXTRA_FILE: ""}
    torch.jit.load(str(path), _extra_files=extra)
    return json.loads(extra[ex.EXTRA_FILE])


def test_predict_with_onnx_agrees_with_predict(trained, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", str(trained), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("parity on the first 250 test images of fashion-mnist: max abs difference")
    assert "top-1 agreement 100.00%" in printed[0] and printed[1] == f"exported to {out}"
    images = [block(tmp_path / "dark.png", 255, 0), block(tmp_path / "light.png", 0, 230)]
    assert main(["predict", str(trained), *images, "--top-k", "3"]) == 0
    torch_text = capsys.readouterr().out
    assert main(["predict", "--backend", "onnx", str(out), *images, "--top-k", "3"]) == 0
    assert capsys.readouterr().out == torch_text
    assert main(["predict", str(trained), *images, "--json"]) == 0
    ref = json.loads(capsys.readouterr().out)
    assert main(["predict", "--backend", "onnx", str(out), *images, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    for r, g in zip(ref, got):
        assert [t["class"] for t in r["top"]] == [t["class"] for t in g["top"]]
        assert all(abs(a["prob"] - b["prob"]) < 1e-5 for a, b in zip(r["top"], g["top"]))
        assert r["preprocessing"] == g["preprocessing"] and r["inverted"] == g["inverted"]


def test_bad_inputs_are_one_line(trained, tmp_path, capsys):
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(b"not a checkpoint")
    assert main(["--quiet", "export", str(damaged)]) == 2
    assert "not a readable torchlab checkpoint" in error_line(capsys)
    unknown = fake_checkpoint(trained, tmp_path / "unknown", "notes-cnn", {"in_channels": 1})
    ckpt = torch.load(unknown, weights_only=True)
    torch.save({**ckpt, "model_name": "no-such-net"}, unknown)
    assert main(["--quiet", "export", str(unknown)]) == 2
    assert "unknown model 'no-such-net'" in error_line(capsys)
    assert main(["--quiet", "export", str(trained), "--out", str(tmp_path / "missing" / "m.onnx")]) == 2
    assert "does not exist" in error_line(capsys)
    assert main(["--quiet", "export", str(trained), "--format", "tflite"]) == 2
    assert "invalid choice: 'tflite'" in error_line(capsys)
    existing = tmp_path / "existing.onnx"
    existing.write_bytes(b"keep me")
    assert main(["--quiet", "export", str(trained), "--out", str(existing)]) == 2
    assert "already exists (pass --force" in error_line(capsys) and existing.read_bytes() == b"keep me"
    assert main(["--quiet", "export", str(trained), "--out", str(existing), "--force"]) == 0
    assert existing.read_bytes() != b"keep me"


def test_unwritable_folder_is_one_line(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ex.os, "access", lambda path, mode: False)  # root may write anywhere: the check is faked
    assert main(["--quiet", "export", str(trained), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "is not writable" in error_line(capsys) and not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_a_mismatch_is_an_error_and_leaves_no_file(trained, tmp_path, capsys, monkeypatch, fmt):
    real = ex.runner

    def skewed(fmt, path, inputs):  # the file's outputs nudged: as if the export were wrong
        run = real(fmt, path, inputs)
        return lambda args: [o + 0.5 * torch.arange(o.shape[1]) for o in run(args)]

    monkeypatch.setattr(ex, "runner", skewed)
    out = tmp_path / "out" / "m.bin"
    out.parent.mkdir()
    assert main(["--quiet", "export", str(trained), "--format", fmt, "--out", str(out)]) == 2
    assert "export does not match PyTorch" in error_line(capsys)
    assert list(out.parent.iterdir()) == []


def test_without_onnx_the_error_names_the_extra(trained, capsys, monkeypatch, tmp_path):
    import sys

    for name in ("onnx", "onnxruntime"):
        monkeypatch.setitem(sys.modules, name, None)  # `import onnx` now raises ImportError
    assert main(["--quiet", "export", str(trained), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "pip install 'torchlab[export]'" in error_line(capsys)
    assert main(["--quiet", "predict", "--backend", "onnx", str(tmp_path / "m.onnx"), "x.png"]) == 2
    assert "pip install 'torchlab[export]'" in error_line(capsys)
