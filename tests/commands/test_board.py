"""`torchlab tensorboard`: the real TensorBoard on a real run, its scalars and images pages loaded in Chromium."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.browser import Browser, find_chromium
from tests.conftest import TINY
from torchlab.cli import main
from torchlab.commands import board

CHROMIUM = find_chromium()
pytestmark = pytest.mark.isa_independent


def test_missing_folder_and_bad_port_are_one_line_errors(tmp_path, capsys):
    assert main(["tensorboard", str(tmp_path / "nope")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main(["tensorboard", str(tmp_path), "--port", "70000"]) == 2
    assert "--port 70000: not a port" in capsys.readouterr().err


def test_free_port_is_free():
    import socket

    port = board.free_port("127.0.0.1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # would raise if taken


def tags_on(browser: Browser, url: str, expected: set[str], images: int = 0) -> tuple[set[str], list[dict]]:
    """Open a dashboard with every tag shown (the filter `.*` opens all groups); wait for the tags and images."""
    browser.open(url)

    def ready(content):
        served = [i for i in content["images"] if "/data/plugin/images/" in i["src"] and i["loaded"]]
        return expected <= set(re.findall(r"tag: (\S+)", content["text"])) and len(served) >= images

    content = browser.content_when(ready, timeout=40)
    return set(re.findall(r"tag: (\S+)", content["text"])), content["images"]


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (`make test` installs Debian's chromium; "
                                             "or apt-get install chromium)")
def test_tensorboard_shows_the_runs_scalars_and_images_in_chromium(tiny_data, tmp_path):
    run = tmp_path / "runs" / "r"
    assert main(["train", "fashion-mnist", "--data-dir", str(tiny_data), *TINY, "--epochs", "2", "--run-dir", str(run)]) == 0
    proc = subprocess.Popen([sys.executable, "-m", "torchlab", "tensorboard", str(tmp_path / "runs")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"TensorBoard on {tmp_path / 'runs'}: http://127.0.0.1:"), proc.stderr.read()
        url = line.split(": ", 1)[1].strip()
        with Browser(CHROMIUM) as browser:
            scalars = {"train/loss", "lr", "val/loss", "val/acc", "test/acc"}
            shown, _ = tags_on(browser, url + "#scalars&tagFilter=.*", scalars)
            assert scalars <= shown
            images = {"train/samples", "test/confusion_matrix"}
            shown, imgs = tags_on(browser, url + "#images&tagFilter=.*", images, 2)
            assert images <= shown
            served = [i for i in imgs if "/data/plugin/images/" in i["src"]]
            assert len(served) >= 2 and all(i["loaded"] and i["width"] > 0 for i in served), imgs
            assert len({(i["width"], i["height"]) for i in served}) == 2  # the sample grid and the confusion matrix
    finally:
        proc.terminate()
        proc.wait(20)


def test_a_port_in_use_is_a_one_line_error(tmp_path, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["tensorboard", str(tmp_path), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("torchlab: error: tensorboard exited before serving") and "choose another --port" in err


def serving(tmp_path) -> tuple[subprocess.Popen, int]:
    """`torchlab tensorboard` in a child process, once it prints its address; returns it and its server's pid."""
    from tests.conftest import descendants

    proc = subprocess.Popen([sys.executable, "-m", "torchlab", "tensorboard", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith(f"TensorBoard on {tmp_path}: http://127.0.0.1:"), proc.stderr.read()
    servers = [pid for pid, cmd in descendants(proc.pid).items() if "tensorboard.main" in cmd]
    assert len(servers) == 1
    return proc, servers[0]


def gone(pid: int, within: float = 15) -> bool:
    """Whether process `pid` has ended (or become a zombie) within `within` seconds."""
    from tests.conftest import proc_parent

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if proc_parent(Path("/proc") / str(pid))[1] == "Z":
                return True
        except (OSError, ValueError, IndexError):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="follows the server process through /proc")
def test_sigterm_stops_tensorboard_too(tmp_path):
    proc, server = serving(tmp_path)
    proc.send_signal(signal.SIGTERM)  # as a process manager, or a test, stops it
    assert proc.wait(20) == 0  # a clean stop, not a death by signal
    assert gone(server), "the TensorBoard server outlived `torchlab tensorboard`"
    proc.stdout.close()
    proc.stderr.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a child dies with its parent through Linux's prctl")
def test_a_killed_torchlab_takes_its_server_with_it(tmp_path):
    proc, server = serving(tmp_path)
    proc.kill()  # SIGKILL: no Python code runs in torchlab
    proc.wait(20)
    assert gone(server), "the TensorBoard server outlived a killed `torchlab tensorboard`"
    proc.stdout.close()
    proc.stderr.close()
