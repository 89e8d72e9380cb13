"""CIFAR-10 python batches: pixel layout, labels, lookup, and every way a batch file can be bad."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import cifar_split, write_cifar, write_cifar_batch
from tests.test_cli import one_line_error
from torchlab.cli import main
from torchlab.data import catalog, cifar
from torchlab.data.locate import locate
from torchlab.errors import UserError

NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def test_known_image_reads_back_as_chw(tmp_path):
    # Every pixel distinct per channel: a wrong reshape (HWC, or transposed) cannot go unnoticed.
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 32, 32), generator=g, dtype=torch.uint8)
    image[0, 0, 0], image[1, 0, 0], image[2, 0, 0], image[0, 0, 1], image[0, 1, 0] = 11, 22, 33, 44, 55
    row = image.reshape(-1).numpy()  # the format: 1024 red, then 1024 green, then 1024 blue, row by row
    assert row[0] == 11 and row[1024] == 22 and row[2048] == 33 and row[1] == 44 and row[32] == 55
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({b"data": np.stack([row, 255 - row]), b"labels": [3, 7],
                                   b"batch_label": b"b", b"filenames": [b"a.png", b"b.png"]}, protocol=2))
    images, labels = cifar.read_batch(path)
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.uint8
    assert torch.equal(images[0], image) and torch.equal(images[1], 255 - image)
    assert labels.dtype == torch.int64 and labels.tolist() == [3, 7]


def test_whole_dataset_labels_and_classes(tmp_path):
    folder = write_cifar(tmp_path / "c", n_train_per_batch=12, n_test=7)
    paths, source = locate(cifar.FILES, str(tmp_path / "c"), offline=True)
    x, y, tx, ty, classes = cifar.read_cifar10(paths)
    assert classes == NAMES
    assert x.shape == (60, 3, 32, 32) and tx.shape == (7, 3, 32, 32) and len(y) == 60 and len(ty) == 7
    for i in range(5):  # batches in order 1..5
        images, labels = cifar_split(12, seed=i + 1)
        assert torch.equal(x[12 * i : 12 * (i + 1)], images) and y[12 * i : 12 * (i + 1)].tolist() == labels
    images, labels = cifar_split(7, seed=6)
    assert torch.equal(tx, images) and ty.tolist() == labels
    assert str(folder) in source


def test_class_names_as_str_are_accepted(tmp_path):
    path = tmp_path / "batches.meta"
    path.write_bytes(pickle.dumps({"label_names": list(NAMES)}, protocol=2))
    assert cifar.read_classes(path) == NAMES


@pytest.mark.parametrize("layout", ["", "cifar-10-batches-py", "cifar10/cifar-10-batches-py"],
                         ids=["flat", "torchvision", "shared-data"])
def test_located_in_every_layout(tmp_path, layout):
    root = tmp_path / "root"
    folder = write_cifar(root, n_train_per_batch=2, n_test=3, subdir=layout)
    loaded = catalog.load("cifar10", str(root), offline=True)
    assert len(loaded.train) == 10 and len(loaded.test) == 3
    assert loaded.source == f"{folder} (--data-dir)"


def test_missing_files_list_the_places_tried(tmp_path, capsys):
    folder = write_cifar(tmp_path / "c", n_train_per_batch=2, n_test=2)
    (folder / "data_batch_3").unlink()
    with pytest.raises(UserError) as info:
        catalog.load("cifar10", str(tmp_path / "c"), offline=True)
    message = info.value.message
    assert message.startswith(f"dataset cifar10 not found in --data-dir {tmp_path / 'c'}; looked for ")
    assert "data_batch_3" in message  # an explicit --data-dir is the only place looked
    one_line_error(capsys, main(["data", "cifar10", "--data-dir", str(tmp_path / "c"), "--offline"]),
                   "dataset cifar10 not found")


class RunsAShellCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_is_refused_without_running_it(tmp_path, capsys):
    folder = write_cifar(tmp_path / "c", n_train_per_batch=2, n_test=2)
    marker = tmp_path / "pwned"
    evil = {b"data": RunsAShellCommand(marker), b"labels": [0]}
    (folder / "data_batch_2").write_bytes(pickle.dumps(evil, protocol=2))
    assert not marker.exists()
    with pytest.raises(UserError) as info:
        catalog.load("cifar10", str(tmp_path / "c"), offline=True)
    assert str(folder / "data_batch_2") in info.value.message and "system" in info.value.message
    code = main(["data", "cifar10", "--data-dir", str(folder), "--offline"])
    one_line_error(capsys, code, str(folder / "data_batch_2"), "refusing to load")
    assert not marker.exists()


def test_pickle_of_another_global_is_refused(tmp_path):
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({b"data": torch.zeros(1), b"labels": [0]}, protocol=2))
    with pytest.raises(UserError, match="refusing to load"):
        cifar.read_batch(path)


def good_batch(n=4):
    images, labels = cifar_split(n, seed=0)
    return {b"data": images.reshape(n, -1).numpy(), b"labels": labels}


@pytest.mark.parametrize("change, fragment", [
    (lambda b: b | {b"data": b[b"data"][:, :3000]}, "shape [N, 3072]"),
    (lambda b: b | {b"data": b[b"data"].astype(np.int64)}, "uint8"),
    (lambda b: b | {b"data": b[b"data"].reshape(-1)}, "shape [N, 3072]"),
    (lambda b: {b"labels": b[b"labels"]}, "'data'"),
    (lambda b: b | {b"labels": b[b"labels"][:-1]}, "3 labels for 4 images"),
    (lambda b: {b"data": b[b"data"]}, "no labels for 4 images"),
    (lambda b: b | {b"labels": [0, 1, 2, 10]}, "labels outside 0..9"),
    (lambda b: b | {b"labels": [0, -1, 2, 3]}, "labels outside 0..9"),
    (lambda b: b | {b"labels": [0, "x", 2, 3]}, "list of integers"),
    (lambda b: b | {b"labels": [0, 2**70, 2, 3]}, "labels outside 0..9"),
    (lambda b: [1, 2, 3], "holds a list"),
    (lambda b: None, "holds a NoneType"),
], ids=["3000-columns", "int64", "1-d", "no-data", "label-count", "no-labels", "label-10", "label-neg",
        "label-str", "label-huge", "list", "none"])
def test_bad_batch_names_the_file(tmp_path, change, fragment):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(change(good_batch()), protocol=2))
    with pytest.raises(UserError) as info:
        cifar.read_batch(path)
    assert str(path) in info.value.message and fragment in info.value.message


@pytest.mark.parametrize("cut", [0, 1, 100, -1])
def test_truncated_file_names_the_file(tmp_path, capsys, cut):
    folder = write_cifar(tmp_path / "c", n_train_per_batch=2, n_test=2)
    path = folder / "test_batch"
    data = path.read_bytes()
    path.write_bytes(data[:cut] if cut >= 0 else data[:cut - 50])
    with pytest.raises(UserError) as info:
        catalog.load("cifar10", str(folder), offline=True)
    assert str(path) in info.value.message and "not a CIFAR-10 batch file" in info.value.message
    one_line_error(capsys, main(["data", "cifar10", "--data-dir", str(folder), "--offline"]), str(path))


def test_not_a_pickle_and_unreadable(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_text("hello, not a pickle\n")
    with pytest.raises(UserError, match="not a CIFAR-10 batch file"):
        cifar.read_batch(path)
    folder = tmp_path / "a-folder"
    folder.mkdir()
    with pytest.raises(UserError, match="cannot read"):
        cifar.read_batch(folder)


def test_bad_meta_names_the_file(tmp_path):
    folder = write_cifar(tmp_path / "c", n_train_per_batch=2, n_test=2)
    meta = folder / "batches.meta"
    meta.write_bytes(pickle.dumps({b"label_names": [b"cat", b"dog"]}, protocol=2))
    with pytest.raises(UserError) as info:
        catalog.load("cifar10", str(folder), offline=True)
    assert str(meta) in info.value.message and "label_names" in info.value.message


def test_batch_written_by_numpy_1_names_is_accepted(tmp_path):
    # NumPy 1 (and the original Python 2 files) name numpy.core.multiarray; NumPy 2 numpy._core.multiarray.
    path = tmp_path / "b"
    write_cifar_batch(path, *cifar_split(3, seed=0))
    data = path.read_bytes()
    old = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert old != data
    path.write_bytes(old)
    images, labels = cifar.read_batch(path)
    assert torch.equal(images, cifar_split(3, seed=0)[0])


def test_data_command_prints_counts(tmp_path, capsys):
    write_cifar(tmp_path / "c", n_train_per_batch=4, n_test=9)
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
    assert main(["data", "cifar10", "--data-dir", str(tmp_path / "c"), "--offline"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("cifar10: 20 train + 9 test images (3, 32, 32), 10 classes")


def test_download_goes_through_torchvision_cifar10(tmp_path, monkeypatch):
    """Online and found nowhere: torchvision.datasets.CIFAR10(download=True) fills the cache, which is then read."""
    import torchvision.datasets

    calls = []

    class FakeCIFAR10:  # stands in for the network: writes the files where torchvision would
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            write_cifar(Path(root), n_train_per_batch=3, n_test=4)

    monkeypatch.delenv("TORCHLAB_OFFLINE")
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    loaded = catalog.load("cifar10")
    cache = tmp_path / "cache" / "torchlab"
    assert calls == [(str(cache), True, True), (str(cache), False, True)]
    assert len(loaded.train) == 15 and len(loaded.test) == 4 and "(downloaded)" in loaded.source
