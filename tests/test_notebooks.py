"""The notebooks in notebooks/ (the notes, section by section, in Chinese): each is stored without outputs and
runs top to bottom on the CPU in a kernel of this interpreter, in a temporary working directory, with
$TORCHLAB_DATA pointing at the project's shared datasets when they sit beside the checkout."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "notebooks"
NOTEBOOKS = sorted(FOLDER.glob("*.ipynb"))
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CELL_TIMEOUT = 120  # seconds for one cell; the slowest (a short training run) takes a few
HAN = re.compile(r"[\u4e00-\u9fff]")
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the colours of IPython's tracebacks


def test_one_notebook_per_section():
    numbers = [path.name.split("_")[0] for path in NOTEBOOKS]
    assert numbers == [f"{i:02d}" for i in range(1, len(NOTEBOOKS) + 1)], [p.name for p in NOTEBOOKS]
    assert len(NOTEBOOKS) == 11


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: cell {i} holds outputs"
    title = nb.cells[0]
    assert title.cell_type == "markdown" and title.source.startswith("# ") and HAN.search(title.source)


@pytest.fixture(scope="session")
def jupyter_home(tmp_path_factory) -> Path:
    """A Jupyter data folder whose "python3" kernel is this interpreter (the venv's), whatever kernels the
    user has installed, plus IPython's and Matplotlib's folders, shared by the notebooks of a session."""
    home = tmp_path_factory.mktemp("jupyter")
    spec = home / "data" / "kernels" / "python3"
    spec.mkdir(parents=True)
    kernel = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
              "display_name": "Python 3 (torchlab tests)", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    return home


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# The notebooks call code the rest of the suite already runs in the reduced-feature pass of `make test`;
# running them again there would add about 85 s on CPUs beyond AVX2.
@pytest.mark.isa_independent
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch, jupyter_home):
    # Kernels see this process's environment: the isolated fixture's offline mode and private cache, and
    # folders of their own for Jupyter, IPython, Matplotlib and temporary files.
    for name, folder in (("JUPYTER_PATH", jupyter_home / "data"), ("JUPYTER_DATA_DIR", jupyter_home / "data"),
                         ("JUPYTER_CONFIG_DIR", jupyter_home / "config"), ("IPYTHONDIR", jupyter_home / "ipython"),
                         ("MPLCONFIGDIR", jupyter_home / "matplotlib"), ("JUPYTER_RUNTIME_DIR", tmp_path / "runtime"),
                         ("TMPDIR", tmp_path / "tmp")):
        folder.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(name, str(folder))
    if SHARED_DATA.is_dir():
        monkeypatch.setenv("TORCHLAB_DATA", str(SHARED_DATA))
    work = tmp_path / "work"
    work.mkdir()
    before = listing(FOLDER)
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, startup_timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(work)}})
    tic = time.perf_counter()
    try:
        client.execute()  # starts the kernel and shuts it down when done, also after an error or a timeout
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(f"{path.name} failed:\n{ANSI.sub('', str(e))}", pytrace=False)
    finally:
        if client.km is not None and client.km.has_kernel:  # never leave a kernel behind
            client.km.shutdown_kernel(now=True)
    seconds = time.perf_counter() - tic
    print(f"{path.name}: {seconds:.1f} s")
    errors = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
              if out.output_type == "error"]
    assert not errors, errors
    assert listing(FOLDER) == before, "a notebook wrote into notebooks/"
