"""Shared fixtures: tiny synthetic IDX datasets and an isolated environment for every test."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from torchlab import hardware
from torchlab.data.idx import write_idx

REAL_LOAD_CACHE = hardware.load_cache

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def machine_rates(tmp_path_factory) -> dict:
    """This machine's matmul and convolution rates (hardware.rates), measured once per session in a cache
    folder of its own; returns that cache's contents."""
    folder = tmp_path_factory.mktemp("session-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(folder))
        hardware.rates(torch.device("cpu"))
        hardware.rates(torch.device("cpu"), convs=True)
        return REAL_LOAD_CACHE()


@pytest.fixture
def rates_on_disk(machine_rates):
    """The session's measured rates written into this test's cache, for tests whose child processes
    (torchrun, the command itself) would otherwise measure them again, a few seconds each."""
    path = hardware.cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(machine_rates))
    return path


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch, machine_rates):
    """No test downloads, reads the user's cache or $TORCHLAB_DATA, or writes outside tmp_path. The test's
    own cache (tmp_path/cache) reads as if it also held this session's measured rates, so that no test pays
    seconds to measure them; tests of the cache itself restore `hardware.load_cache` (REAL_LOAD_CACHE)."""
    monkeypatch.setenv("TORCHLAB_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("TORCHLAB_DATA", raising=False)
    monkeypatch.chdir(tmp_path)

    def load_cache() -> dict:
        data = REAL_LOAD_CACHE()
        for key, machine in machine_rates["machines"].items():
            rates = data["machines"].setdefault(key, {}).setdefault("rates", {})
            for name, value in machine.get("rates", {}).items():
                rates.setdefault(name, value)
        return data

    monkeypatch.setattr(hardware, "load_cache", load_cache)
    from torchlab.data import vision

    spec = vision.DATASETS["fashion-mnist"]  # never pick up a Debian copy installed on this machine
    files = dataclasses.replace(spec.files, debian_dir=str(tmp_path / "no-debian"))
    monkeypatch.setitem(vision.DATASETS, "fashion-mnist", dataclasses.replace(spec, files=files))


def descendants(pid: int) -> dict[int, str]:
    """Live (non-zombie) processes below `pid`, by pid -> command line, read from /proc."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid, state = proc_parent(proc)
        except (OSError, ValueError, IndexError):
            continue
        if state != "Z":
            children.setdefault(ppid, []).append(int(proc.name))
    found, todo = {}, list(children.get(pid, []))
    while todo:
        child = todo.pop()
        try:
            found[child] = (Path("/proc") / str(child) / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        todo.extend(children.get(child, []))
    return found


def proc_parent(proc: Path) -> tuple[int, str]:
    """(parent pid, state letter) of /proc/PID; the name in parentheses may hold spaces."""
    fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1]), fields[0]


def adopt_orphans() -> None:
    """Make this process the Linux "subreaper" of everything the tests start: a grandchild whose parent died
    (a server left behind by a killed command) is re-parented here instead of to init, so it is still found
    among `descendants` and the test that left it fails."""
    import ctypes

    PR_SET_CHILD_SUBREAPER = 36  # from <linux/prctl.h>
    try:
        ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1)
    except (OSError, AttributeError):
        pass


if Path("/proc/self/stat").exists():
    adopt_orphans()

# Python's own helper for `spawn` start methods lives as long as the interpreter that started it.
LONG_LIVED = ("multiprocessing.resource_tracker",)


@pytest.fixture(autouse=True)
def no_process_left_behind():
    """Every process a test starts (servers, torchrun workers, browsers) is gone when it ends."""
    if not Path("/proc/self/stat").exists():
        yield
        return
    before = set(descendants(os.getpid()))
    yield
    deadline = time.monotonic() + 10  # a stopped server may need a moment to exit
    while True:
        left = {pid: cmd for pid, cmd in descendants(os.getpid()).items()
                if pid not in before and not any(name in cmd for name in LONG_LIVED)}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    assert not left, f"the test left processes running: {left}"


@pytest.fixture
def native_bf16():
    """Skips a test that needs bf16 arithmetic in hardware (AVX512-BF16, AMX) where the CPU emulates it."""
    from torchlab import hardware

    rates = hardware.rates(torch.device("cpu"))
    fp32, bf16 = rates["matmul fp32"], rates["matmul bf16"]
    if bf16 < fp32:
        pytest.skip(f"needs native bf16: this CPU emulates it (bf16 matmul {bf16:.1f} GFLOP/s against {fp32:.1f} "
                    "in fp32)")


@pytest.fixture
def one_thread():
    """Tiny forward passes run much faster on one thread when the machine is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def synthetic_split(n: int, seed: int, classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Learnable 28x28 images: class k is a bright 6x6 block at a position set by k, plus noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    labels = labels[torch.randperm(n, generator=g)]
    images = torch.randint(0, 60, (n, 28, 28), generator=g, dtype=torch.uint8)
    for k in range(classes):
        r, c = 2 + (k // 5) * 12, 2 + (k % 5) * 5
        images[labels == k, r : r + 6, c : c + 6] = 230
    return images, labels.to(torch.uint8)


def write_dataset(folder: Path, n_train: int = 600, n_test: int = 250, gz: bool = True) -> Path:
    """Write the four IDX files (Fashion-MNIST names) of a synthetic dataset into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    for prefix, n, seed in (("train", n_train, 1), ("t10k", n_test, 2)):
        images, labels = synthetic_split(n, seed)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels)
    return folder


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    return write_dataset(tmp_path / "data")


# Flags for fast CLI training runs on the tiny dataset.
TINY = ["--device", "cpu", "--val-size", "100", "--batch-size", "50", "--eval-batch-size", "64", "--log-every", "2"]


# CIFAR-10 colours per class: class k is a 12x12 block of PALETTE[k] at a position set by k, on dark noise.
CIFAR_PALETTE = ((230, 30, 30), (30, 230, 30), (30, 30, 230), (230, 230, 30), (230, 30, 230),
                 (30, 230, 230), (240, 240, 240), (240, 140, 30), (140, 30, 240), (120, 120, 120))


def cifar_split(n: int, seed: int) -> tuple[torch.Tensor, list[int]]:
    """Learnable 32x32 RGB images uint8 [n, 3, 32, 32] and their labels (class k: colour block k)."""
    g = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % 10)[torch.randperm(n, generator=g)]
    images = torch.randint(0, 50, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    for k in range(10):
        r, c = 2 + (k // 5) * 16, 1 + (k % 5) * 6
        block = torch.tensor(CIFAR_PALETTE[k], dtype=torch.uint8).view(3, 1, 1)
        images[labels == k, :, r : r + 12, c : c + 12] = block
    return images, labels.tolist()


def write_cifar_batch(path: Path, images: torch.Tensor, labels: list[int], name: str = "batch") -> None:
    """One CIFAR-10 python batch: a protocol-2 pickle of a dict with bytes keys, rows RRR..GGG..BBB."""
    import pickle

    data = images.reshape(len(images), -1).numpy()  # CHW flattened row-major: 1024 R, 1024 G, 1024 B
    batch = {b"batch_label": name.encode(), b"labels": list(labels), b"data": data,
             b"filenames": [f"{name}_{i:05d}.png".encode() for i in range(len(labels))]}
    path.write_bytes(pickle.dumps(batch, protocol=2))


def write_cifar(folder: Path, n_train_per_batch: int = 20, n_test: int = 50,
                subdir: str = "cifar-10-batches-py") -> Path:
    """Write a synthetic CIFAR-10 in the real python-batch format under folder/subdir; returns that folder.

    data_batch_1..5 hold n_train_per_batch images each (batch i drawn with seed i), test_batch
    n_test (seed 6), and batches.meta the ten real class names as bytes.
    """
    import pickle

    out = folder / subdir if subdir else folder
    out.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        images, labels = cifar_split(n_train_per_batch, seed=i)
        write_cifar_batch(out / f"data_batch_{i}", images, labels, f"training batch {i} of 5")
    images, labels = cifar_split(n_test, seed=6)
    write_cifar_batch(out / "test_batch", images, labels, "testing batch 1 of 1")
    names = [n.encode() for n in ("airplane", "automobile", "bird", "cat", "deer",
                                  "dog", "frog", "horse", "ship", "truck")]
    meta = {b"num_cases_per_batch": n_train_per_batch, b"label_names": names, b"num_vis": 3072}
    (out / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return out


def weights(path):
    """The model weights of a checkpoint file."""
    return torch.load(path, weights_only=True)["model_state"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def error_line(capsys) -> str:
    """The error of a failed command: exactly one line on stderr, no traceback (run with --quiet)."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and "\n" not in err, err
    assert err.startswith("torchlab: error: ")
    return err
