"""runtime.py: `auto` settings chosen by timing the run's own step, cached, and never slower than measured."""

from __future__ import annotations

import pytest
import torch

from torchlab import hardware, runtime
from torchlab.runtime import Requested, Runtime, Workload

CPU = torch.device("cpu")
AUTO = Requested()


def stub_workload(steps: int = 10_000, **kw) -> Workload:
    return Workload("stub model, batch 8", build=None, items_per_step=8, planned_steps=steps, **kw)


@pytest.fixture
def rates(monkeypatch):
    """Stub machine rates: {"bf16": speedup}; the default is an emulating CPU (bf16 50x slower)."""
    speed = {"bf16": 0.02}
    monkeypatch.setattr(hardware, "bf16_speedup", lambda device, measure=True: speed["bf16"])
    monkeypatch.setattr(hardware, "rates", lambda device, convs=False, measure=True:
                        {"matmul fp32": 100.0, "matmul bf16": 100.0 * speed["bf16"]})
    return speed


@pytest.fixture
def timings(monkeypatch):
    """Stub measurement: each candidate's (rate, warm-up) from a table; records what was measured."""
    table, measured = {}, []

    def measure(work, runtimes):
        measured.extend(r.label() for r in runtimes)
        return {r.label(): {"rate": table.get(r.label(), (100.0, 0.1))[0], "warmup": table.get(r.label(), (0, 0.1))[1]}
                for r in runtimes}

    monkeypatch.setattr(runtime, "measure", measure)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    return table, measured


def test_auto_picks_the_fastest_measured_setting(rates, timings):
    table, measured = timings
    rates["bf16"] = 2.0  # native bf16: it is a candidate
    table.update({"fp32 NCHW 4 threads": (100, 0.1), "fp32 NHWC 4 threads": (120, 0.1),
                  "bf16 NCHW 4 threads": (150, 0.1), "bf16 NHWC 4 threads": (190, 0.1),
                  "bf16 NHWC 2 threads": (200, 0.1), "bf16 NHWC 1 thread": (90, 0.1),
                  "bf16 NHWC 2 threads compiled": (205, 50.0)})
    rt, notes = runtime.choose(CPU, AUTO, stub_workload(steps=30_000))
    # 240,000 images: compile's 50 s of warm-up cost more than its 2.5% gain saves (~30 s).
    assert rt == Runtime(CPU, bf16=True, channels_last=True, compile=False, threads=2)
    assert "bf16 NHWC 2 threads is the fastest measured" in notes[-1]
    # Measured in stages: precision x layout, then threads around the best, then compile around the best.
    assert measured == ["fp32 NCHW 4 threads", "fp32 NHWC 4 threads", "bf16 NCHW 4 threads", "bf16 NHWC 4 threads",
                        "bf16 NHWC 2 threads", "bf16 NHWC 1 thread", "bf16 NHWC 2 threads compiled"]


def test_compile_is_not_measured_for_a_short_run(rates, timings):
    _, measured = timings
    rt, notes = runtime.choose(CPU, AUTO, stub_workload(steps=1000))  # 8,000 images at 100/s: 80 s
    assert not rt.compile and not any("compiled" in label for label in measured)
    assert "compile: not measured; the run's 80 s of training are too few to win back a compile" in notes


def test_compile_wins_when_the_run_is_long_enough_to_pay_for_it(rates, timings):
    table, _ = timings
    table.update({"fp32 NHWC 4 threads": (120, 0.1), "fp32 NHWC 4 threads compiled": (240, 30.0)})
    rt, _ = runtime.choose(CPU, AUTO, stub_workload(steps=100_000))  # 800,000 images: compile saves ~3,300 s
    assert rt.compile and rt.channels_last and not rt.bf16


@pytest.mark.parametrize("seed", range(20))
def test_auto_never_picks_a_setting_measured_slower(rates, timings, seed):
    """Whatever the measured rates, the pick has the least total time (steps / rate + warm-up) among them."""
    table, measured = timings
    g = torch.Generator().manual_seed(seed)
    rates["bf16"] = float(torch.rand(1, generator=g)) * 3
    labels = [r.label() for r in runtime.candidates(CPU, AUTO, stub_workload(), [])]
    for label in labels:
        table[label] = (float(torch.rand(1, generator=g)) * 1000 + 1, float(torch.rand(1, generator=g)) * 60)
    work = stub_workload(steps=int(torch.randint(200, 50_000, (1,), generator=g)))
    rt, _ = runtime.choose(CPU, AUTO, work)
    items = work.items_per_step * work.planned_steps
    total = {label: items / table[label][0] + table[label][1] for label in set(measured)}
    assert total[rt.label()] == min(total.values())


def test_bf16_is_not_tried_where_it_is_emulated(rates, timings):
    _, measured = timings
    rt, notes = runtime.choose(CPU, AUTO, stub_workload())
    assert not rt.bf16 and not any(label.startswith("bf16") for label in measured)
    assert any("bf16 is emulated here (matmul 2.0 against 100.0 GFLOP/s in fp32)" in n for n in notes)


def test_explicit_bf16_where_emulated_is_kept_with_a_warning(rates, timings):
    rt, notes = runtime.choose(CPU, Requested(precision="bf16"), stub_workload())
    assert rt.bf16
    assert notes[0] == ("warning: --precision bf16: this cpu runs bf16 50x slower than fp32 (matmul 2.0 against "
                        "100.0 GFLOP/s); --precision auto picks fp32")


def test_fixed_settings_measure_nothing(rates, timings):
    _, measured = timings
    req = Requested(precision="fp32", channels_last="on", compile="off", threads=3)
    assert runtime.choose(CPU, req, stub_workload()) == (Runtime(CPU, False, True, False, 3), [])
    assert measured == []


def test_a_short_run_is_not_measured_but_uses_the_cache(rates, timings):
    table, measured = timings
    rt, notes = runtime.choose(CPU, AUTO, stub_workload(steps=50))
    assert measured == [] and rt == Runtime(CPU, False, False, False, 4) and "not measured" in notes[-1]
    table["fp32 NHWC 4 threads"] = (500, 0.1)
    runtime.choose(CPU, AUTO, stub_workload(steps=5000))  # a long run measures and caches
    measured.clear()
    rt, _ = runtime.choose(CPU, AUTO, stub_workload(steps=50))
    assert measured == [] and rt.channels_last  # the short run now takes the cached choice


def test_a_second_run_reads_its_choice_from_the_cache(rates, timings):
    _, measured = timings
    first, _ = runtime.choose(CPU, AUTO, stub_workload())
    count = len(measured)
    assert runtime.choose(CPU, AUTO, stub_workload())[0] == first and len(measured) == count
    runtime.choose(CPU, AUTO, Workload("another model, batch 8", None, 8, 10_000))
    assert len(measured) > count  # another workload is measured on its own


def test_a_candidate_that_fails_is_ruled_out():
    """Real measurement of a tiny workload whose bf16 variant fails, as oneDNN's bf16 LSTM does on AVX2."""
    def build(rt):
        if rt.bf16:
            raise RuntimeError("could not create a primitive descriptor\nmore")
        x = torch.randn(64, 64)
        return lambda n: [x @ x for _ in range(n)]

    result = runtime.measure(Workload("matmul", build, 64, 1000), [Runtime(CPU, True), Runtime(CPU, False)])
    assert result["bf16 NCHW"] == {"rate": 0.0, "warmup": 0.0, "error": "could not create a primitive descriptor"}
    assert result["fp32 NCHW"]["rate"] > 0
    with pytest.raises(RuntimeError, match="primitive descriptor"):  # nothing runs at all: that is a bug
        runtime.measure(Workload("matmul", build, 64, 1000), [Runtime(CPU, True)])


def test_threads_set_restores_the_thread_count():
    before = torch.get_num_threads()
    with Runtime(CPU, threads=1).threads_set():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_runtime_settings_round_trip():
    rt = Runtime(CPU, bf16=True, channels_last=False, compile=True, threads=3)
    assert runtime.from_settings(CPU, rt.settings()) == rt
