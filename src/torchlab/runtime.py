"""How a run computes: its device, precision, memory layout, torch.compile and CPU threads.

`--precision auto`, `--channels-last auto`, `--compile auto` and `--threads 0`
are decided by timing the run's own training step (a `Workload`) in each
candidate setting, a few seconds each, in interleaved rounds so that the drift
of a busy machine hits every candidate alike. The winner is the setting with the
least total time for the planned run: steps / rate, plus its warm-up (which is
where torch.compile spends its compile time). Measurements are cached per
machine (hardware.py), so each workload is timed once.

bf16 is tried only where the measured matmul rates show it is not emulated, and
compile only for runs long enough to win back a compile. A run too short to pay
for a measurement (`MIN_STEPS`) uses what the cache knows, else PyTorch's
defaults: fp32, NCHW, eager, the default thread count. Whatever is chosen is
written into the run's config, so a resumed or replayed run computes the same way.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import torch

from torchlab import distributed, hardware
from torchlab.errors import UserError
from torchlab.i18n import _

MIN_STEPS = 200  # shorter runs are not worth a measurement
COMPILE_MIN_SECONDS = 300.0  # compile takes 20-60 s on a small CPU: shorter runs hardly ever win it back
WARMUP_STEPS = 3  # oneDNN picks its kernels and the allocator grows over the first steps
ROUNDS, ROUND_SECONDS = 3, 1.0  # per candidate: 3 interleaved rounds of about a second, at least 2 steps each


def pick_device(name: str | torch.device) -> torch.device:
    """`auto` takes the first available of cuda, mps, cpu; a named device (a string such as "cuda:1", or a
    torch.device) must be available. Under torchrun each process takes its own GPU, cuda:LOCAL_RANK."""
    name = distributed.device_for(str(name))
    if name.startswith("cuda:"):
        return torch.device(name)
    mps = getattr(torch.backends, "mps", None)
    available = {"cuda": torch.cuda.is_available(), "mps": bool(mps and mps.is_available()), "cpu": True}
    if name == "auto":
        return torch.device(next(kind for kind, ok in available.items() if ok))
    if not available.get(name, False):
        raise UserError(_("--device {name}: not available on this machine").format(name=name),
                        _("use --device auto or --device cpu"))
    return torch.device(name)


@dataclass(frozen=True)
class Runtime:
    """How tensors are laid out and computed on one device."""

    device: torch.device
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False  # torch.compile the training model
    threads: int = 0  # torch's CPU threads (0: as they are)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def settings(self) -> dict:
        """The config values that reproduce this runtime."""
        return {"precision": "bf16" if self.bf16 else "fp32", "channels_last": "on" if self.channels_last else "off",
                "compile": "on" if self.compile else "off", "threads": self.threads}

    def label(self) -> str:
        threads = f" {self.threads} thread{'s' if self.threads > 1 else ''}" if self.threads else ""
        return (f"{'bf16' if self.bf16 else 'fp32'} {'NHWC' if self.channels_last else 'NCHW'}{threads}"
                + (" compiled" if self.compile else ""))

    def describe(self) -> str:
        on, off = _("on"), _("off")
        return _("device: {device}  precision: {precision}  channels-last: {channels_last}  compile: {compile}").format(
            device=self.device, precision="bf16" if self.bf16 else "fp32", channels_last=on if self.channels_last
            else off, compile=on if self.compile else off) \
            + (_("  threads: {threads}").format(threads=self.threads or torch.get_num_threads())
               if self.device.type == "cpu" else "")

    @contextmanager
    def threads_set(self):
        """Inside: torch uses this runtime's thread count; afterwards the previous one again."""
        before = torch.get_num_threads()
        if self.device.type == "cpu" and self.threads:
            torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)


@dataclass(frozen=True)
class Requested:
    """Settings as the user gave them: "auto" (threads 0) means measure."""

    precision: str = "auto"
    channels_last: str = "auto"
    compile: str = "auto"
    threads: int = 0

    @classmethod
    def of(cls, cfg) -> "Requested":
        return cls(cfg.precision, getattr(cfg, "channels_last", "off"), getattr(cfg, "compile", "off"), cfg.threads)


@dataclass
class Workload:
    """One training step of a run's own model, to be timed in candidate settings.

    `build(rt)` makes the model, optimizer and a batch for runtime `rt` and returns `run(n)`, which trains
    n steps on that batch and waits for the device. `name` keys the cache: it must hold everything that
    changes the speed (model, input shape, batch, optimizer)."""

    name: str
    build: Callable[[Runtime], Callable[[int], None]]
    items_per_step: int
    planned_steps: int
    convolutional: bool = True  # whether the memory layout matters
    compilable: bool = True


def choose(device: torch.device, req: Requested, work: Workload | None = None) -> tuple[Runtime, list[str]]:
    """The runtime for a run, and lines saying what was chosen and why. With several processes rank 0
    decides (and measures, alone) and every process takes its choice."""
    if not distributed.WORLD.enabled:
        return decide(device, req, work)
    picked = decide(device, req, work) if distributed.WORLD.main else None
    settings, notes = distributed.share((picked[0].settings(), picked[1]) if picked else None)
    return from_settings(device, settings), notes


def from_settings(device: torch.device, settings: dict) -> Runtime:
    """The runtime that concrete config values (as `Runtime.settings` gives them) describe."""
    return Runtime(device, settings["precision"] == "bf16", settings["channels_last"] == "on",
                   settings["compile"] == "on", settings["threads"])


def decide(device: torch.device, req: Requested, work: Workload | None) -> tuple[Runtime, list[str]]:
    notes: list[str] = []
    if req.precision == "bf16":
        notes += emulated_warning(device)
    space = candidates(device, req, work, notes)
    if len(space) == 1:
        return space[0], notes
    known = hardware.cached(device, "choices", work.name) or {}
    if work.planned_steps >= MIN_STEPS:
        known = tune(device, space, work, known, notes)
    timed = [r for r in space if known.get(r.label(), {}).get("rate")]
    if not timed:
        notes.append(_("auto settings: not measured for a run of {steps} steps (under {least}); PyTorch's defaults")
                     .format(steps=work.planned_steps, least=MIN_STEPS))
        return space[0], notes
    items = work.items_per_step * work.planned_steps
    best = min(timed, key=lambda r: items / known[r.label()]["rate"] + known[r.label()]["warmup"])
    notes.append(_("auto settings: {best} is the fastest measured for {work} ({rates})").format(
        best=best.label(), work=work.name, rates=", ".join(f"{r.label()} {known[r.label()]['rate']:,.0f}/s"
                                                           for r in timed)))
    return best, notes


def candidates(device: torch.device, req: Requested, work: Workload | None, notes: list) -> list[Runtime]:
    """Every runtime the request allows, PyTorch's defaults first (what an unmeasured run gets)."""
    precisions = [req.precision == "bf16"] if req.precision != "auto" else [False]
    if req.precision == "auto" and work is not None:
        speedup = hardware.bf16_speedup(device, measure=work.planned_steps >= MIN_STEPS)
        if speedup is None or speedup >= 0.5:  # within reach of fp32 (or unknown): the real step decides
            precisions.append(True)
        else:
            r = hardware.rates(device)
            notes.append(_("precision: fp32, since bf16 is emulated here (matmul {bf16} against {fp32} GFLOP/s in "
                           "fp32)").format(bf16=f"{r['matmul bf16']:.1f}", fp32=f"{r['matmul fp32']:.1f}"))
    layouts = [req.channels_last == "on"] if req.channels_last != "auto" or work is None or not work.convolutional \
        else [False, True]
    compiles = [req.compile == "on"] if req.compile != "auto" or work is None or not work.compilable else [False, True]
    default = torch.get_num_threads()  # under torchrun each process shares the cores: the threads stay
    fixed = req.threads or device.type != "cpu" or distributed.WORLD.enabled or work is None
    threads = [req.threads or (default if device.type == "cpu" else 0)] if fixed \
        else sorted({default, max(1, default // 2), max(1, default // 4)}, reverse=True)
    return [Runtime(device, p, c, k, t) for k in compiles for t in threads for p in precisions for c in layouts]


def tune(device: torch.device, space: list[Runtime], work: Workload, known: dict, notes: list) -> dict:
    """Time what is not yet known, in stages (precision x layout, then threads, then compile), each stage
    around the best so far; returns every known timing."""
    first, best, announced = space[0], space[0], False
    stages = [lambda r: r.threads == first.threads and r.compile == first.compile,
              lambda r: r.compile == first.compile and (r.bf16, r.channels_last) == (best.bf16, best.channels_last),
              lambda r: dataclasses.replace(r, compile=first.compile) == best]
    for stage, wanted in enumerate(stages):
        batch = [r for r in space if wanted(r)]
        if stage == 2 and len(batch) > 1:
            eager_seconds = work.items_per_step * work.planned_steps / known[best.label()]["rate"]
            if eager_seconds < COMPILE_MIN_SECONDS:
                notes.append(_("compile: not measured; the run's {seconds} s of training are too few to win back "
                               "a compile").format(seconds=f"{eager_seconds:.0f}"))
                break
        todo = [r for r in batch if r.label() not in known]
        if todo and not announced:
            from torchlab.logger import say

            say(_("measuring the fastest settings for {work} on {device} (once; cached in {cache})")
                .format(work=work.name, device=hardware.device_name(device), cache=hardware.cache_file()))
            announced = True
        known = {**known, **measure(work, todo)}
        timed = [r for r in batch if known.get(r.label(), {}).get("rate")]
        best = max(timed, key=lambda r: known[r.label()]["rate"]) if timed else best
    if announced:
        hardware.remember(device, "choices", work.name, known)
    return known


def measure(work: Workload, runtimes: list[Runtime]) -> dict:
    """{label: {"rate": items/s, "warmup": s}}, the best of ROUNDS interleaved rounds after a warm-up; a
    candidate that fails to run gets rate 0 and its error (bf16 kernels missing on this device, say). If
    every one fails, that is a bug."""
    runs, result, errors = {}, {}, []
    for rt in runtimes:
        with rt.threads_set():
            try:
                run = rt_build(work, rt)
                warmup = timed(run, WARMUP_STEPS)  # with compile: the compilation
                step = timed(run, 1)
            except Exception as e:  # noqa: BLE001 - any failure rules the candidate out
                errors.append(e)
                result[rt.label()] = {"rate": 0.0, "warmup": 0.0, "error": str(e).strip().splitlines()[0][:200]}
                continue
        runs[rt.label()] = (rt, run, max(2, round(ROUND_SECONDS / max(step, 1e-6))))
        result[rt.label()] = {"rate": work.items_per_step / step, "warmup": warmup}
    if errors and not runs:
        raise errors[0]
    for _round in range(ROUNDS):
        for label, (rt, run, steps) in runs.items():
            with rt.threads_set():
                rate = steps * work.items_per_step / timed(run, steps)
            result[label]["rate"] = max(result[label]["rate"], rate)
    return result


def timed(run: Callable[[int], None], steps: int) -> float:
    tic = time.perf_counter()
    run(steps)
    return time.perf_counter() - tic


def rt_build(work: Workload, rt: Runtime) -> Callable[[int], None]:
    torch.manual_seed(0)
    return work.build(rt)


def runs_in_bf16(layer: torch.nn.Module, rt: Runtime) -> bool:
    """Whether a recurrent `layer` (batch-first, with `input_size`) trains under bf16 autocast on this device:
    some kernels exist only for some CPUs (oneDNN's bf16 LSTM needs AVX-512). Random draws are left as they
    were, so the run stays the same with or without this check."""
    x = torch.zeros(1, 2, layer.input_size, device=rt.device, requires_grad=True)  # [B, T, I]
    with torch.random.fork_rng(devices=[rt.device] if rt.device.type == "cuda" else []):
        try:
            with rt.autocast():
                out = layer(x)[0]
            out.float().sum().backward()
        except RuntimeError:
            return False
        finally:
            layer.zero_grad(set_to_none=True)
    return True


def emulated_warning(device: torch.device) -> list[str]:
    """A warning when bf16 was asked for where the device runs it slower than fp32."""
    speedup = hardware.bf16_speedup(device)
    if speedup >= 1:
        return []
    r = hardware.rates(device)
    return [_("warning: --precision bf16: this {device} runs bf16 {times}x slower than fp32 (matmul {bf16} against "
              "{fp32} GFLOP/s); --precision auto picks fp32").format(
        device=device.type, times=f"{1 / max(speedup, 1e-9):.0f}", bf16=f"{r['matmul bf16']:.1f}",
        fp32=f"{r['matmul fp32']:.1f}")]


def for_scoring(device: torch.device, cfg: dict) -> Runtime:
    """The runtime to score a saved model: the precision and layout it was trained with; "auto" in
    checkpoints older than this choice means bf16 where it measured faster than fp32."""
    precision = cfg.get("precision", "fp32")
    bf16 = precision == "bf16" or (precision == "auto" and hardware.bf16_speedup(device) > 1)
    return Runtime(device, bf16, cfg.get("channels_last", "off") == "on")
