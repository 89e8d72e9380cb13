"""The README's test command: the suite runs a second time with the CPU features reduced to AVX2, and those
variables really reduce what this torch uses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.isa_independent  # checks the variables themselves, from a fresh process each


def reduced() -> dict[str, str]:
    """The variables of the Makefile's reduced-feature pass."""
    line = re.search(r"^REDUCED := (.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert line, "the Makefile defines no REDUCED variables"
    return dict(pair.split("=", 1) for pair in line.group(1).split())


def test_ci_runs_the_readme_test_command_and_it_includes_the_reduced_pass():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test " in (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    test = makefile[makefile.index("\ntest:"):makefile.index("\ntest-avx2:")]
    assert "test-avx2" in test and "beyond_avx2" in test
    assert "env $(REDUCED) $(PYTEST)" in makefile and "PYTEST := $(BIN)/python -m pytest -q" in makefile
    assert set(reduced()) == {"ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS"}


PROBE = """
import torch
print("aten", torch.backends.cpu.get_cpu_capability())
conv = torch.nn.Conv2d(3, 8, 3)
conv(torch.randn(2, 3, 16, 16))
"""


@pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64", reason="x86 instruction sets")
def test_the_reduced_variables_limit_torch_and_onednn_to_avx2():
    env = {**os.environ, **reduced(), "ONEDNN_VERBOSE": "1"}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True).stdout
    assert re.search(r"^aten (AVX2|DEFAULT)$", out, re.M), out  # never AVX512
    isa = re.search(r"onednn_verbose,.*isa:(.+)$", out, re.M)
    assert isa and "AVX-512" not in isa.group(1) and "AMX" not in isa.group(1), out


def test_the_cache_keeps_apart_what_is_measured_under_the_reduced_variables(monkeypatch):
    import torch

    from torchlab import hardware

    full = hardware.machine_key(torch.device("cpu"))
    for name, value in reduced().items():
        monkeypatch.setenv(name, value)
    assert hardware.machine_key(torch.device("cpu")) != full
