"""Child processes that never outlive the command that started them.

A server started by torchlab (TensorBoard) must stop when torchlab stops, however
it stops: Ctrl-C, SIGTERM from a process manager or a test, or SIGKILL.
`terminate_raises` turns SIGTERM into the same KeyboardInterrupt as Ctrl-C, so
the `finally` blocks that stop children run; `die_with_parent` asks Linux to
send the child SIGTERM when its parent dies outright (SIGKILL runs no Python).
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
from contextlib import contextmanager

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies (Linux only; elsewhere nothing)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
        except (OSError, AttributeError):  # no prctl in this libc: the SIGTERM handler still covers most cases
            pass


def start_child(command: list[str], **popen) -> subprocess.Popen:
    """subprocess.Popen whose process is stopped with its parent, even when the parent is SIGKILLed."""
    return subprocess.Popen(command, preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
                            **popen)


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; always reaps the process."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def terminate_raises(make=KeyboardInterrupt):
    """Inside: SIGTERM raises make() (in the main thread): KeyboardInterrupt by default, as Ctrl-C does.
    Outside the main thread signals stay as they are; afterwards the old handler is back."""

    def handler(signum, frame):
        raise make()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: signals stay as they are
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
