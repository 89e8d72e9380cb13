"""Data-parallel training over several processes, as started by `torchrun`.

torchrun starts one process per GPU (or CPU worker) and tells each who it is
through environment variables: RANK (0..WORLD_SIZE-1 over all machines),
WORLD_SIZE and LOCAL_RANK (the GPU on this machine). Without them torchlab
runs as one ordinary process and nothing here does anything.

Every process holds the whole dataset and the same model. Each training batch
of `--batch-size` examples (the global batch) is cut into WORLD_SIZE equal
slices, one per rank; DistributedDataParallel averages the gradients, so the
update is the one a single process would make from the whole batch. Evaluation
gives each rank a contiguous share of the split and sums the counts, so every
example is scored exactly once. Only rank 0 writes files and prints.
"""

from __future__ import annotations

import datetime
import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from torchlab.errors import UserError
from torchlab.i18n import _

DEFAULT_TIMEOUT_S = 300  # a collective that waits longer than this means a rank is gone or stuck


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def part(self, n: int) -> slice:
        """This rank's contiguous share of n items; shares differ by at most one and cover all n once."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def slice_of_batch(self, batch_size: int, what: str = "--batch-size") -> slice:
        """This rank's rows of a global batch, which must split evenly."""
        if batch_size % self.size:
            raise UserError(_("{what} {batch_size}: the global batch must split evenly over {size} processes")
                            .format(what=what, batch_size=batch_size, size=self.size),
                            _("use a multiple of {size}").format(size=self.size))
        per = batch_size // self.size
        return slice(self.rank * per, (self.rank + 1) * per)


WORLD = World()  # this process's place; set by `start`


def from_env() -> World:
    if "WORLD_SIZE" not in os.environ:
        return World()
    return World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))


def device_for(name: str) -> str:
    """The device of this rank: with several processes, `cuda` (or auto with a GPU) means cuda:LOCAL_RANK."""
    w = from_env()
    if w.enabled and name in ("auto", "cuda") and torch.cuda.is_available():
        if w.local_rank >= torch.cuda.device_count():
            raise UserError(_("LOCAL_RANK {rank}: this machine has {gpus} GPUs").format(rank=w.local_rank, gpus=torch.cuda.device_count()),
                            _("start at most one process per GPU (torchrun --nproc-per-node)"))
        return f"cuda:{w.local_rank}"
    return name


@contextmanager
def start(device: torch.device):
    """Join the process group for the length of a run (NCCL on CUDA, Gloo on the CPU); a no-op alone."""
    global WORLD
    w = from_env()
    if not w.enabled:
        yield w
        return
    timeout = datetime.timedelta(seconds=float(os.environ.get("TORCHLAB_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=timeout)
    WORLD = w
    try:
        yield w
    except (dist.DistBackendError, dist.DistError, RuntimeError) as e:
        if not is_collective_failure(e):
            raise
        raise UserError(_("rank {rank}: another process stopped or stalled ({error})").format(rank=w.rank, error=first_line(e)),
                        _("see the other ranks' output; the last checkpoint is intact")) from None
    finally:
        WORLD = World()
        dist.destroy_process_group()


def is_collective_failure(e: Exception) -> bool:
    text = str(e).lower()
    return isinstance(e, (dist.DistBackendError, dist.DistError)) or any(
        k in text for k in ("gloo", "nccl", "connection", "timed out", "timeout", "peer"))


def first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def all_sum(*tensors: torch.Tensor) -> None:
    """Sum each tensor over all ranks, in place."""
    if WORLD.enabled:
        for t in tensors:
            dist.all_reduce(t)


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when it is true on any: ranks must agree to stop at the same step."""
    if not WORLD.enabled:
        return flag
    t = torch.tensor(float(flag), device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def share(obj):
    """Rank 0's value of `obj` on every rank (e.g. the run directory it created)."""
    if not WORLD.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_rows(t: torch.Tensor, dim: int) -> torch.Tensor:
    """The ranks' tensors joined along `dim` in rank order (they must have equal shapes)."""
    if not WORLD.enabled:
        return t
    parts = [torch.empty_like(t) for _ in range(WORLD.size)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim)


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around `model` when there are several ranks; the module itself otherwise.

    The wrapper is only for the training forward pass: checkpoints, evaluation and the weight average
    use the plain module, so a checkpoint from N processes loads in one."""
    if not WORLD.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def gather_objects(obj) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    if not WORLD.enabled:
        return [obj]
    out = [None] * WORLD.size
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait for every rank (e.g. until rank 0 has written a checkpoint the others will read)."""
    if WORLD.enabled:
        dist.barrier()


def spread_seeds() -> None:
    """Give each rank its own random stream (dropout, say), derived from the current shared one."""
    if WORLD.enabled:
        torch.manual_seed(int(torch.randint(2**62, (1,))) + WORLD.rank)


def describe(batch_size: int, unit: str) -> str | None:
    """How the work is split, printed at the start of a run with several processes."""
    if not WORLD.enabled:
        return None
    return (f"{WORLD.size} processes: --batch-size {batch_size} is the global batch, {batch_size // WORLD.size} "
            f"{unit} per process; --lr applies to the global batch (gradients are averaged over processes)")


def sync_buffers(model: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (batch-norm running statistics, which each rank updates from its
    own slice of the batch), so that all evaluate the same model."""
    if WORLD.enabled:
        for b in model.buffers():
            dist.broadcast(b, src=0)


def should_stop(stop, step: int, device: torch.device, every: int = 8) -> bool:
    """Whether the training loop stops before `step` (Ctrl-C sets `stop.requested` in some processes).

    The processes must stop at the same step, or the others would wait forever for the missing ones,
    so they agree on it every `every` steps (each agreement is a sync, which a GPU would pay every step)."""
    if stop is None:
        return False
    if not WORLD.enabled:
        return stop.requested
    if step % every:
        return False
    stop.requested = any_rank(stop.requested, device)
    return stop.requested
