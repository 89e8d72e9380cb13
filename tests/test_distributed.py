"""Data-parallel training with 2 CPU processes (Gloo on loopback), started as torchrun starts them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY, weights
from torchlab.cli import main
from torchlab.distributed import World

pytestmark = pytest.mark.usefixtures("one_thread")

LM_TINY = ["--device", "cpu", "--precision", "fp32", "--embed-size", "16", "--hidden-size", "32", "--layers", "1",
           "--bptt", "8", "--batch-size", "4", "--eval-batch-size", "3", "--log-every", "2", "--dropout", "0",
           "--embed-dropout", "0", "--weight-drop", "0"]


def torchrun(args: list[str], n: int = 2, wait: bool = True, timeout: float = 120):
    """`torchrun --standalone --nproc-per-node=n -m torchlab ARGS` in the current folder."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}",
           "-m", "torchlab", *args, "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


# Weight comparisons between process counts train with plain SGD. The processes sum the same gradients in
# another order, so each step's gradient differs by float rounding, about n * 6e-8 of the sum of |terms| over
# n <= 50 images: ~1e-6 of a gradient. SGD's update is linear in the gradient, so after k steps at lr the
# weights differ by about k * lr * 1e-6 * |g| (measured: 3e-7 after 14 steps), far below atol 1e-5. Adam would
# not do: it divides by sqrt(v), so a weight whose gradient is nearly zero turns rounding noise into a full
# step of size lr (measured: 4e-5 apart after the same 14 steps, different on each CPU).
SGD = ["--optimizer", "sgd", "--lr", "0.05"]


def assert_close_weights(a: dict, b: dict, atol: float = 1e-5):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k].float(), b[k].float(), rtol=1e-4, atol=atol, msg=k)


@pytest.mark.parametrize("n, size", [(2, 7), (2, 8), (3, 10), (4, 2), (3, 1)])
def test_each_example_belongs_to_exactly_one_process(n, size):
    parts = [World(r, n).part(size) for r in range(n)]
    covered = [i for p in parts for i in range(size)[p]]
    assert covered == list(range(size))  # contiguous, in order, nothing twice, nothing left out
    assert max(len(range(size)[p]) for p in parts) - min(len(range(size)[p]) for p in parts) <= 1


def test_global_batch_must_split_evenly():
    assert [World(r, 2).slice_of_batch(50) for r in range(2)] == [slice(0, 25), slice(25, 50)]
    with pytest.raises(Exception, match="split evenly over 3 processes"):
        World(0, 3).slice_of_batch(50)


def run_json(args: list[str], capsys) -> dict:
    assert main([*args, "--json", "--quiet"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def odd_data(tmp_path):
    from tests.conftest import write_dataset

    return write_dataset(tmp_path / "odd", n_train=400, n_test=101)  # 101 test images: no even split


def test_two_processes_match_one_and_score_every_test_image_once(odd_data, tmp_path, capsys):
    args = ["train", "fashion-mnist", "--data-dir", str(odd_data), *TINY, *SGD, "--val-size", "51", "--epochs", "2"]
    one = run_json([*args, "--run-dir", "one"], capsys)
    done = torchrun([*args, "--run-dir", "two", "--json"])
    assert done.returncode == 0, done.stderr[-2000:]
    two = json.loads(done.stdout)
    assert two["processes"] == 2 and two["test_count"] == one["test_count"] == 101
    assert [h["step"] for h in two["history"]] == [h["step"] for h in one["history"]]
    # The same updates from the same global batches: only the order of float sums differs.
    assert_close_weights(weights(tmp_path / "one" / "last.pt"), weights(tmp_path / "two" / "last.pt"))
    assert two["test_acc"] == pytest.approx(one["test_acc"], abs=0.02)
    assert abs(two["history"][-1]["train_loss"] - one["history"][-1]["train_loss"]) < 1e-4
    assert not list((tmp_path / "two").glob("*.tmp"))


@pytest.mark.parametrize("task", ["fashion-mnist", "lm"])
def test_a_checkpoint_moves_between_process_counts(task, tiny_data, tmp_path, capsys):
    if task == "lm":
        text = tmp_path / "t.txt"
        text.write_text("the time traveller spoke to us of the fourth dimension. " * 30)
        args = ["train", "lm", "--corpus", str(text), *LM_TINY, *SGD, "--epochs", "2"]
        steps = "9"  # mid-epoch: the hidden state of both processes' streams is saved and split again
    else:
        args = ["train", "fashion-mnist", "--data-dir", str(tiny_data), *TINY, *SGD, "--epochs", "2"]
        steps = "5"
    straight = run_json([*args, "--run-dir", "straight"], capsys)
    done = torchrun([*args, "--run-dir", "two-then-one", "--max-steps", steps])  # 2 processes, then 1
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = run_json(["train", "--resume", "two-then-one", "--max-steps", "0"], capsys)
    assert main([*args, "--run-dir", "one-then-two", "--max-steps", steps, "--quiet"]) == 0  # 1, then 2
    capsys.readouterr()
    done = torchrun(["train", "--resume", "one-then-two", "--max-steps", "0"])
    assert done.returncode == 0, done.stderr[-2000:]
    for run in ("two-then-one", "one-then-two"):
        assert json.loads((tmp_path / run / "summary.json").read_text())["status"] == "finished"
        assert_close_weights(weights(tmp_path / "straight" / "last.pt"), weights(tmp_path / run / "last.pt"))
    assert resumed["steps"] == straight["steps"]


def worker_pids(parent: int, rank: int) -> list[int]:
    """Processes below `parent` whose environment says RANK=rank."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and f"RANK={rank}".encode() in env:
            pids.append(int(proc.name))
    return pids


@pytest.mark.isa_independent
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker processes through /proc")
def test_a_dead_rank_stops_the_others_and_leaves_the_checkpoint_intact(tiny_data, tmp_path):
    run = torchrun(["train", "fashion-mnist", "--data-dir", str(tiny_data), *TINY, "--epochs", "200",
                    "--run-dir", "r"], wait=False)
    deadline = time.monotonic() + 60
    while not (tmp_path / "r" / "last.pt").exists():  # the first epoch is done
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()[1][-2000:]
        time.sleep(0.2)
    victims = worker_pids(run.pid, rank=1)
    assert len(victims) == 1
    os.kill(victims[0], signal.SIGKILL)
    try:
        _, err = run.communicate(timeout=60)  # bounded: nobody waits for the dead rank
    except subprocess.TimeoutExpired:
        run.kill()
        pytest.fail("the other rank kept running after rank 1 died")
    assert run.returncode != 0
    assert "rank: 1" in err or "rank 1" in err, err[-2000:]
    ckpt = torch.load(tmp_path / "r" / "last.pt", weights_only=True)  # whole and loadable
    assert ckpt["state"]["global_step"] > 0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def replica(rank: int, world: int, port: int, out: str) -> None:
    """One process of a hand-started 2-process group: a few training steps and an evaluation."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from torchlab import distributed
    from torchlab.data.vision import TensorLoader
    from torchlab.engine import evaluate, train_one_epoch
    from torchlab.runtime import Runtime
    from torchlab.models.registry import build_model, model_config

    cpu = torch.device("cpu")
    with distributed.start(cpu) as w:
        torch.manual_seed(0)
        model = build_model("vgg-tiny", model_config("vgg-tiny"))
        distributed.spread_seeds()  # dropout differs per process; the weights must not
        g = torch.Generator().manual_seed(1)
        images, labels = torch.randint(0, 256, (64, 1, 28, 28), generator=g, dtype=torch.uint8), torch.arange(64) % 10
        loader = TensorLoader(images, labels, 16, train=True, augment=True, flip=True, norm=((0.3,), (0.3,)),
                              erase=0.5, rows=w.slice_of_batch(16))
        wrapped = distributed.wrap(model, cpu)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        rt = Runtime(cpu)
        metrics = train_one_epoch(wrapped, loader.epoch(0), opt, None, rt, log_every=10**9)
        part = w.part(7)  # 7 test images over 2 processes: 4 and 3
        test = TensorLoader(images[:7][part], labels[:7][part], 2, train=False, norm=((0.3,), (0.3,)))
        result = evaluate(model, test.epoch(), rt, 10)
        torch.save({"state": model.state_dict(), "images": metrics["images"], "count": result["count"]},
                   Path(out) / f"rank{rank}.pt")


def test_replicas_hold_identical_parameters_after_training_steps(tmp_path):
    torch.multiprocessing.spawn(replica, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    assert r0["images"] == r1["images"] == 64  # 4 global batches of 16, counted over both processes
    assert r0["count"] == r1["count"] == 7  # every test image scored once, the counts summed
