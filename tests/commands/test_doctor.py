"""`torchlab doctor`: the machine, its measured rates, what auto picks, datasets and tools, as text and JSON."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import REAL_LOAD_CACHE
from torchlab import hardware
from torchlab.cli import main


@pytest.fixture
def stub_rates(monkeypatch):
    """Rates of an emulating CPU (bf16 at 1/50 of fp32), without spending seconds measuring them."""
    monkeypatch.setattr(hardware, "load_cache", REAL_LOAD_CACHE)  # without the session's measured rates
    monkeypatch.setattr(hardware, "matmul_rate", lambda device, dtype, budget=1.0:
                        100e9 if dtype == torch.float32 else 2e9)
    monkeypatch.setattr(hardware, "conv_rate", lambda device, dtype, cl, budget=1.0:
                        (60e9 if cl else 50e9) if dtype == torch.float32 else 1e9)


def doctor_json(capsys, *args) -> dict:
    assert main(["doctor", "--json", "--device", "cpu", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_fields(stub_rates, capsys):
    r = doctor_json(capsys)
    assert r["torch"] == torch.__version__ and r["torchvision"] and r["torchlab"]
    assert r["devices"][0] == {"device": "cpu", "name": hardware.cpu_info()["model"]}
    assert set(r["cpu"]) == {"model", "features", "capability", "cores"}
    assert set(r["cpu"]["features"]) <= {label for label, _ in hardware.FEATURES}
    assert r["threads"] == torch.get_num_threads()
    assert r["rates_gflops"] == {"matmul fp32": 100.0, "conv fp32 nchw": 50.0, "conv fp32 nhwc": 60.0,
                                 "matmul bf16": 2.0, "conv bf16 nchw": 1.0, "conv bf16 nhwc": 1.0}
    auto = r["auto"]
    assert auto["precision"] == "fp32" and "bf16 is emulated here" in auto["why"]
    assert auto["fast_recipe_table"] == "cpu" and auto["measured"] == {}
    assert set(r["datasets"]) == {"fashion-mnist", "mnist", "cifar10", "timemachine", "tang"}
    assert not any(d["found"] for d in r["datasets"].values())  # the tests see no data but their own
    assert set(r["tools"]) == {"tensorboard", "chromium"} and r["cache"] == str(hardware.cache_file())


def test_finds_the_datasets_where_they_are(stub_rates, tiny_data, capsys):
    r = doctor_json(capsys, "--data-dir", str(tiny_data))
    assert r["datasets"]["fashion-mnist"] == {"found": True, "where": f"{tiny_data} (--data-dir)"}
    assert not r["datasets"]["cifar10"]["found"] and "not found" in r["datasets"]["cifar10"]["why"]


def test_reduced_features_and_measured_settings_are_reported(stub_rates, capsys, monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    hardware.remember(torch.device("cpu"), "choices", "vgg-small 1x28x28, batch 256, sgd",
                      {"fp32 NCHW 2 threads": {"rate": 700.0, "warmup": 0.3},
                       "fp32 NHWC 2 threads": {"rate": 900.0, "warmup": 0.3},
                       "bf16 NCHW 2 threads": {"rate": 0.0, "warmup": 0.0, "error": "no kernel"}})
    r = doctor_json(capsys)
    assert r["feature_limits"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert r["auto"]["measured"] == {"vgg-small 1x28x28, batch 256, sgd": {
        "fastest": "fp32 NHWC 2 threads", "items_per_second": {"fp32 NCHW 2 threads": 700.0, "fp32 NHWC 2 threads": 900.0},
        "failed": {"bf16 NCHW 2 threads": "no kernel"}}}
    assert main(["doctor", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "limited by: ONEDNN_MAX_CPU_ISA=AVX2" in text
    assert "vgg-small 1x28x28, batch 256, sgd: fp32 NHWC 2 threads (fp32 NCHW 2 threads 700/s" in text
    assert "auto precision: fp32 (bf16 matmul runs at 0.02x the fp32 rate" in text


def test_measure_times_every_recipe(stub_rates, capsys, monkeypatch):
    from torchlab import runtime

    timed = []
    monkeypatch.setattr(runtime, "measure", lambda work, runtimes: (
        timed.append(work.name), {r.label(): {"rate": 100.0 + r.channels_last, "warmup": 0.1} for r in runtimes})[1])
    r = doctor_json(capsys, "--measure")
    names = set(r["auto"]["measured"])
    assert {"notes-cnn 1x28x28, batch 64, adam", "vgg-small 1x28x28, batch 128, sgd"} <= names
    assert all(m["fastest"].startswith("fp32 NHWC") for m in r["auto"]["measured"].values())
    assert set(timed) == names
