import dataclasses
import os

import pytest
import torch

from torchlab import checkpoint
from torchlab.errors import UserError
from torchlab.models.cnn import NotesCNNConfig
from torchlab.models.registry import build_model


def make(task="fashion-mnist"):
    torch.manual_seed(0)
    model = build_model("notes-cnn", NotesCNNConfig())
    ckpt = {"format": checkpoint.FORMAT, "version": checkpoint.VERSION, "task": task, "model_name": "notes-cnn",
            "model_config": dataclasses.asdict(model.config), "model_state": model.state_dict(),
            "rng": checkpoint.rng_state()}
    return model, ckpt


def test_save_load_rebuilds_an_identical_model(tmp_path):
    model, ckpt = make()
    checkpoint.atomic_save(ckpt, tmp_path / "m.pt")
    loaded = checkpoint.load(tmp_path / "m.pt", task="fashion-mnist")
    clone = build_model(loaded["model_name"], loaded["model_config"])
    clone.load_state_dict(loaded["model_state"])
    x = torch.randn(5, 1, 28, 28)
    assert torch.equal(model.eval()(x), clone.eval()(x))
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left behind
    assert oct(os.stat(tmp_path / "m.pt").st_mode & 0o777) != oct(0o600)


def test_atomic_save_keeps_old_file_when_writing_fails(tmp_path):
    _, ckpt = make()
    path = tmp_path / "last.pt"
    checkpoint.atomic_save(ckpt, path)
    before = path.read_bytes()

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        checkpoint.atomic_save({"x": Boom()}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_wrong_task_is_rejected(tmp_path):
    _, ckpt = make(task="mnist")
    checkpoint.atomic_save(ckpt, tmp_path / "m.pt")
    with pytest.raises(UserError, match="for task 'mnist', not 'fashion-mnist'"):
        checkpoint.load(tmp_path / "m.pt", task="fashion-mnist")


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_pickled_code_is_never_run(tmp_path):
    torch.save({"format": checkpoint.FORMAT, "payload": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="not a readable torchlab checkpoint"):
        checkpoint.load(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned.txt").exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", None])
def test_damaged_files(tmp_path, content):
    path = tmp_path / "bad.pt"
    if content is None:  # a real checkpoint cut in half
        _, ckpt = make()
        checkpoint.atomic_save(ckpt, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(UserError) as e:
        checkpoint.load(path)
    assert str(path) in str(e.value)


def test_foreign_checkpoint_is_rejected(tmp_path):
    model, _ = make()
    torch.save(model.state_dict(), tmp_path / "plain.pt")  # what the notes saved
    with pytest.raises(UserError, match="not a torchlab checkpoint"):
        checkpoint.load(tmp_path / "plain.pt")


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="no such checkpoint"):
        checkpoint.load(tmp_path / "none.pt")


def test_rng_state_round_trip():
    state = checkpoint.rng_state()
    a = torch.rand(3)
    checkpoint.set_rng_state(state)
    assert torch.equal(torch.rand(3), a)
