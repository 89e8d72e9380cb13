"""Where datasets are looked for, in order.

1. `--data-dir DIR`: when given, the only place. A folder that does not hold
   the dataset is an error naming what was looked for, never a silent fall-back
   to the places below (the run's config would record a folder it never read).
2. `$TORCHLAB_DATA` (a root laid out like the project's shared/data folder)
3. Debian's packaged copy (`apt-get install dataset-fashion-mnist`)
4. a download through torchvision into the user cache (skipped when
   `$TORCHLAB_OFFLINE=1` or `offline=True`)

Every candidate folder is checked for all of a dataset's files, each either
plain or gzipped. When nothing is found, one error lists every place tried.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torchlab.errors import UserError
from torchlab.i18n import _


@dataclass(frozen=True)
class DatasetFiles:
    """What `locate` needs to know about a dataset's files."""

    name: str  # CLI name, e.g. "fashion-mnist"
    folder: str  # torchvision's folder name, e.g. "FashionMNIST"
    files: tuple[str, ...]  # file names without .gz
    debian_dir: str | None = None
    subdir: str = ""  # where torchvision keeps the files under its root (default: FOLDER/raw)
    downloader: str = ""  # the torchvision.datasets class that downloads them (default: FOLDER)

    @property
    def layout(self) -> Path:
        return Path(self.subdir or f"{self.folder}/raw")


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "torchlab"


def candidate_dirs(root: Path, spec: DatasetFiles) -> list[Path]:
    """Folders under `root` that may hold the files: flat, torchvision-style or shared/data-style."""
    return [root, root / spec.layout, root / spec.name, root / spec.name / spec.layout]


def find_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def files_in(folder: Path, spec: DatasetFiles) -> dict[str, Path] | None:
    found = {name: find_file(folder, name) for name in spec.files}
    return found if all(found.values()) else None  # type: ignore[return-value]


def not_in_data_dir(root: Path, folders: list[Path], wanted: str, what: str, hint: str = "") -> UserError:
    """The one-line error for an explicit --data-dir without `what` ("dataset mnist"): what was looked for, and
    where."""
    missing = "" if root.is_dir() else _(" (no such folder)")
    inside = ", ".join(str(f.relative_to(root)) + "/" for f in folders if f != root)
    return UserError(_("{what} not found in --data-dir {root}{missing}; looked for {wanted} in it").format(
                         what=what, root=root, missing=missing, wanted=wanted)
                     + (_(" and in {folders}").format(folders=inside) if inside else ""),
                     hint or _("point --data-dir at the folder holding them, or leave it out to search "
                               "$TORCHLAB_DATA, the user cache and the download"))


def in_data_dir(spec: DatasetFiles, data_dir: str) -> tuple[dict[str, Path], str]:
    """The files in an explicit --data-dir (or the folders torchvision and shared/data make in it), or the error."""
    root = Path(data_dir).expanduser()
    folders = candidate_dirs(root, spec)
    for folder in folders:
        if (found := files_in(folder, spec)) is not None:
            return found, f"{folder} (--data-dir)"
    raise not_in_data_dir(root, folders, ", ".join(spec.files) + _(" (each plain or .gz)"),
                          _("dataset {name}").format(name=spec.name))


def local_sources(spec: DatasetFiles) -> list[tuple[str, Path]]:
    """(label, root) pairs in lookup order without --data-dir, before any download."""
    sources = []
    if os.environ.get("TORCHLAB_DATA"):
        sources.append(("$TORCHLAB_DATA", Path(os.environ["TORCHLAB_DATA"]).expanduser()))
    if spec.debian_dir:
        sources.append(("Debian package", Path(spec.debian_dir)))
    return sources


def download(spec: DatasetFiles, root: Path) -> None:
    """Fetch the dataset with torchvision (which checks each file's md5)."""
    import torchvision.datasets

    dataset_class = getattr(torchvision.datasets, spec.downloader or spec.folder)
    for train in (True, False):
        dataset_class(root=str(root), train=train, download=True)


def locate(spec: DatasetFiles, data_dir: str | None = None, offline: bool = False) -> tuple[dict[str, Path], str]:
    """Return ({file name: path}, description of the source) or raise UserError."""
    if data_dir:
        return in_data_dir(spec, data_dir)
    tried = []
    for label, root in local_sources(spec):
        for folder in candidate_dirs(root, spec):
            if (found := files_in(folder, spec)) is not None:
                return found, f"{folder} ({label})"
        tried.append(f"{label} {root}")
    cache = cache_root()
    for folder in candidate_dirs(cache, spec):
        if (found := files_in(folder, spec)) is not None:
            return found, f"{folder} (user cache)"
    offline = offline or os.environ.get("TORCHLAB_OFFLINE") == "1"
    if offline:
        tried.append(f"user cache {cache} (download skipped: offline)")
    else:
        try:
            download(spec, cache)
        except Exception as e:  # any network or server failure: report it with the rest
            tried.append(f"download into {cache} ({type(e).__name__}: {e})")
        else:
            if (found := files_in(cache / spec.layout, spec)) is not None:
                return found, f"{cache / spec.layout} (downloaded)"
            tried.append(f"download into {cache} (files missing afterwards)")
    if not os.environ.get("TORCHLAB_DATA"):
        tried.insert(0, "no --data-dir, no $TORCHLAB_DATA")
    hint = _("pass --data-dir DIR or set TORCHLAB_DATA to a folder holding {files}").format(files=", ".join(spec.files))
    if spec.debian_dir:
        hint += _(", or run `apt-get install dataset-{name}`").format(name=spec.name)
    raise UserError(_("dataset {name} not found; tried: {tried}").format(name=spec.name, tried="; ".join(tried)), hint)
