"""hardware.py: the machine's description, its measured rates and the cache they live in."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import REAL_LOAD_CACHE
from torchlab import hardware

CPU = torch.device("cpu")


@pytest.fixture
def counted(monkeypatch):
    """Stub matmul and conv rates (fp32 100 GFLOP/s, bf16 2) that count how often they are measured."""
    calls = []
    monkeypatch.setattr(hardware, "load_cache", REAL_LOAD_CACHE)  # without the session's measured rates

    def matmul_rate(device, dtype, budget=1.0):
        calls.append(dtype)
        return (100e9 if dtype == torch.float32 else 2e9)

    monkeypatch.setattr(hardware, "matmul_rate", matmul_rate)
    monkeypatch.setattr(hardware, "conv_rate", lambda device, dtype, cl, budget=1.0: 50e9)
    return calls


def test_rates_are_measured_once_then_read_from_the_cache(counted):
    first = hardware.rates(CPU)
    assert first == {"matmul fp32": 100.0, "matmul bf16": 2.0} and len(counted) == 2
    assert hardware.rates(CPU) == first and len(counted) == 2  # the second call reads the cache
    assert hardware.bf16_speedup(CPU) == pytest.approx(0.02)
    saved = json.loads(hardware.cache_file().read_text())
    assert saved["machines"][hardware.machine_key(CPU)]["rates"]["cpu"] == first


@pytest.mark.parametrize("change", ["torch version", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY",
                                    "MKL_ENABLE_INSTRUCTIONS", "OMP_NUM_THREADS"])
def test_a_new_torch_or_a_reduced_feature_set_measures_again(counted, monkeypatch, change):
    hardware.rates(CPU)
    if change == "torch version":
        monkeypatch.setattr(torch, "__version__", torch.__version__ + ".other")
    else:
        monkeypatch.setenv(change, "AVX2" if change != "OMP_NUM_THREADS" else "1")
    hardware.rates(CPU)
    assert len(counted) == 4  # measured again under the new key
    assert len(json.loads(hardware.cache_file().read_text())["machines"]) == 2  # the old entry is kept


@pytest.mark.parametrize("damage", [b"{not json", b"[1, 2]", b'{"version": 1, "machines": 3}', b"\xff\xfe",
                                    b'{"version": 0, "machines": {}}'])
def test_a_damaged_cache_is_measured_again_and_rewritten(counted, damage):
    path = hardware.cache_file()
    path.parent.mkdir(parents=True)
    path.write_bytes(damage)
    assert hardware.rates(CPU)["matmul fp32"] == 100.0 and len(counted) == 2
    assert json.loads(path.read_text())["version"] == hardware.CACHE_VERSION


def test_an_unwritable_cache_still_measures(counted, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # a file where the folder should be
    assert hardware.rates(CPU)["matmul fp32"] == 100.0
    assert hardware.rates(CPU)["matmul fp32"] == 100.0 and len(counted) == 4  # nothing kept: measured again


def test_the_cache_follows_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "elsewhere"))
    assert hardware.cache_file() == tmp_path / "elsewhere" / "torchlab" / "runtime.json"


def test_real_rates_are_positive():
    fp32 = hardware.matmul_rate(CPU, torch.float32, budget=0.4)
    bf16 = hardware.matmul_rate(CPU, torch.bfloat16, budget=0.4)
    conv = hardware.conv_rate(CPU, torch.float32, channels_last=True, budget=0.4)
    assert fp32 > 1e8 and bf16 > 1e7 and conv > 1e8


@pytest.mark.parametrize("rate, tried", [(1e12, [1, 2, 3]), (1e9, [1]), (4e10, [1, 2])])
def test_a_ladder_stops_before_a_size_predicted_to_overrun(monkeypatch, rate, tried):
    """Sizes of 1, 8 and 64 GFLOP with a budget of 1 s: a size whose one run would take over 0.25 s at the
    rate measured so far is not run (an emulated bf16 stops at the small sizes)."""
    runs = []
    monkeypatch.setattr(hardware, "best_rate", lambda op, flops, device, budget: (op(), (rate, flops / rate))[1])
    best = hardware.ladder(lambda size: ((lambda: runs.append(size)), 8 ** (size - 1) * 1e9), (1, 2, 3), CPU, 1.0)
    assert runs == tried and best == rate


def test_cpu_info_names_the_features_from_the_flags(monkeypatch):
    info = hardware.cpu_info()
    assert info["capability"] in ("DEFAULT", "VSX", "ZVECTOR", "AVX2", "AVX512", "SVE256", "NEON") or info["capability"]
    assert info["cores"] >= 1 and isinstance(info["model"], str) and info["model"]
    flags = set(info["flags"])
    for label, names in hardware.FEATURES:
        assert (label in info["features"]) == bool(flags & set(names))
