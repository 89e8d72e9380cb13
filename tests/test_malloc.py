"""The `torchlab` command's memory allocator: tcmalloc where the system has it, else glibc keeping freed memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from torchlab import malloc

pytestmark = [pytest.mark.skipif(not sys.platform.startswith("linux"), reason="allocators are chosen on Linux"),
              pytest.mark.isa_independent]

# What the command's start-up does (torchlab.__main__.entry), then the allocator it ended with.
STARTUP = ("import json, os; from torchlab import malloc; malloc.restart_with_tcmalloc(); malloc.keep_freed_memory(); "
           "print(json.dumps([malloc.describe(), os.getpid()]))")


def command_allocator(env: dict | None = None) -> tuple[str, str]:
    """(the allocator a fresh process ends with after torchlab's start-up, its stderr)."""
    done = subprocess.run([sys.executable, "-c", STARTUP], env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout)[0], done.stderr


def test_the_command_runs_with_tcmalloc_where_the_system_has_it():
    chosen, err = command_allocator()
    if malloc.tcmalloc_path() is None:
        assert chosen == "glibc (keeping freed memory)"  # the fallback, measured 0-8% faster than glibc as is
    else:
        assert chosen == "tcmalloc" and not err  # restarted once, preloaded, and quiet


def test_system_keeps_the_process_as_it_started():
    assert command_allocator({"TORCHLAB_MALLOC": "system"})[0] == "glibc"


def test_an_allocator_the_user_preloaded_is_left_alone(tmp_path):
    jemalloc = next((p for p in ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2")
                     if os.path.exists(p)), None)
    if jemalloc is None:
        pytest.skip("needs jemalloc (Debian: libjemalloc2) to preload")
    assert command_allocator({"LD_PRELOAD": jemalloc})[0] == "jemalloc"


def test_python_m_torchlab_runs_with_tcmalloc(rates_on_disk):
    """The restart is an exec of the same command line (the pid that torchrun and process managers follow stays)."""
    if malloc.tcmalloc_path() is None:
        pytest.skip("no tcmalloc on this machine (Debian: libtcmalloc-minimal4, which make test installs)")
    done = subprocess.run([sys.executable, "-m", "torchlab", "doctor", "--json", "--device", "cpu"],
                          capture_output=True, text=True, check=True)
    assert json.loads(done.stdout)["allocator"] == "tcmalloc"


def test_keep_freed_memory_sets_glibc_and_reports_it(monkeypatch):
    monkeypatch.setattr(malloc, "KEPT", False)
    monkeypatch.setattr(malloc, "in_use", lambda: "glibc")
    assert malloc.keep_freed_memory() and malloc.describe() == "glibc (keeping freed memory)"
    monkeypatch.setattr(malloc, "KEPT", False)
    monkeypatch.setenv("TORCHLAB_MALLOC", "system")
    assert not malloc.keep_freed_memory() and malloc.describe() == "glibc"
