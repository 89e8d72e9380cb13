"""`torchlab tensorboard [DIR]`: start the real TensorBoard on the runs, on a free local port.

A thin convenience over `tensorboard --logdir DIR`: it picks a port nobody
uses, waits until the server answers, prints the address and keeps serving
until Ctrl-C or SIGTERM, either of which stops TensorBoard too (so does SIGKILL
on Linux: the server is started to die with its parent).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from torchlab import procs
from torchlab.errors import UserError
from torchlab.i18n import _
from torchlab.logger import say


def add_arguments(p) -> None:
    p.add_argument("dir", nargs="?", default="runs", help=_("folder of runs (default: runs)"))
    p.add_argument("--port", type=int, default=0, help=_("port to serve on (default: a free one)"))
    p.add_argument("--host", default="127.0.0.1", help=_("address to listen on (default: this machine only)"))
    p.add_argument("--wait", type=float, default=60.0, help=_("seconds to wait for TensorBoard to start (default 60)"))


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "data/logdir", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def start(logdir: Path, host: str, port: int, wait: float):
    """Start TensorBoard and return (process, address) once it answers; a failure says why in one line."""
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", host, "--port", str(port)]
    log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a pipe nobody reads would fill and stall it
    proc = procs.start_child(command, stdout=subprocess.DEVNULL, stderr=log, text=True)
    url = f"http://{host}:{port}/"
    deadline = time.monotonic() + wait
    try:
        while not answers(url):
            if proc.poll() is not None:
                log.seek(0)
                last = (log.read().strip().splitlines() or ["no output"])[-1]
                raise UserError(_("tensorboard exited before serving ({last})").format(last=last),
                                _("pip install tensorboard, or choose another --port"))
            if time.monotonic() > deadline:
                raise UserError(_("tensorboard did not answer on {url} within {wait} s").format(url=url, wait=f"{wait:.0f}"),
                                _("try a larger --wait"))
            time.sleep(0.3)
    except BaseException:  # an error, Ctrl-C or SIGTERM while waiting: the server goes too
        procs.stop(proc)
        raise
    return proc, url


def run(args) -> int:
    logdir = Path(args.dir)
    if not logdir.is_dir():
        raise UserError(_("{logdir}: no such directory").format(logdir=logdir), _("give the folder your runs are in, e.g. runs"))
    if not 0 <= args.port < 65536:
        raise UserError(_("--port {port}: not a port").format(port=args.port), _("use 1-65535, or leave it out for a free one"))
    port = args.port or free_port(args.host)
    with procs.terminate_raises():  # SIGTERM stops TensorBoard as Ctrl-C does
        proc = None
        try:
            proc, url = start(logdir, args.host, port, args.wait)
            print(f"TensorBoard on {logdir}: {url}", flush=True)
            say(_("Ctrl-C stops it"))
            return proc.wait()
        except KeyboardInterrupt:
            return 0
        finally:
            if proc is not None:
                procs.stop(proc)
