from __future__ import annotations

import dataclasses
import stat
from pathlib import Path

import pytest
import torch

from conftest import synthetic_split, write_dataset
from torchlab.data import locate as locate_module
from torchlab.data import vision
from torchlab.data.locate import locate
from torchlab.errors import UserError


def spec_files():
    return vision.DATASETS["fashion-mnist"].files


def use_debian_dir(monkeypatch, folder: Path) -> None:
    spec = vision.DATASETS["fashion-mnist"]
    files = dataclasses.replace(spec.files, debian_dir=str(folder))
    monkeypatch.setitem(vision.DATASETS, "fashion-mnist", dataclasses.replace(spec, files=files))


def no_download(spec, root):
    pytest.fail(f"download attempted into {root}")


def assert_found_in(found: dict[str, Path], folder: Path, gz: bool = True) -> None:
    files = spec_files().files
    assert set(found) == set(files)
    ext = ".gz" if gz else ""
    for name in files:
        assert found[name] == folder / f"{name}{ext}"


def test_autouse_fixture_points_debian_dir_into_tmp(tmp_path):
    assert spec_files().debian_dir == str(tmp_path / "no-debian")


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
@pytest.mark.parametrize(
    "layout",
    [".", "FashionMNIST/raw", "fashion-mnist", "fashion-mnist/FashionMNIST/raw"],
    ids=["flat", "torchvision", "named", "shared-data"],
)
def test_every_layout_is_accepted(tmp_path, monkeypatch, layout, gz):
    monkeypatch.setattr(locate_module, "download", no_download)
    root = tmp_path / "root"
    folder = write_dataset(root / layout, n_train=20, n_test=10, gz=gz)
    found, source = locate(spec_files(), str(root), offline=True)
    assert_found_in(found, folder, gz)
    assert str(folder) in source and "--data-dir" in source


def test_mixed_plain_and_gz_files_are_accepted(tmp_path, monkeypatch):
    monkeypatch.setattr(locate_module, "download", no_download)
    folder = write_dataset(tmp_path / "mixed", n_train=20, n_test=10, gz=True)
    plain = folder / "t10k-labels-idx1-ubyte"
    (folder / "t10k-labels-idx1-ubyte.gz").rename(plain)  # content is gzip, but only presence matters here
    found, _ = locate(spec_files(), str(folder), offline=True)
    assert found["t10k-labels-idx1-ubyte"] == plain
    assert found["train-images-idx3-ubyte"] == folder / "train-images-idx3-ubyte.gz"


def test_plain_file_preferred_over_gz_in_same_folder(tmp_path):
    folder = write_dataset(tmp_path / "both", n_train=20, n_test=10, gz=True)
    write_dataset(folder, n_train=20, n_test=10, gz=False)
    found, _ = locate(spec_files(), str(folder), offline=True)
    assert_found_in(found, folder, gz=False)


@pytest.mark.parametrize("missing", list(vision.IDX_FILES))
def test_folder_missing_one_file_is_skipped(tmp_path, monkeypatch, missing):
    monkeypatch.setattr(locate_module, "download", no_download)
    incomplete = write_dataset(tmp_path / "env" / "fashion-mnist", n_train=20, n_test=10)
    (incomplete / f"{missing}.gz").unlink()
    complete = write_dataset(tmp_path / "env" / "FashionMNIST" / "raw", n_train=20, n_test=10)
    monkeypatch.setenv("TORCHLAB_DATA", str(tmp_path / "env"))
    found, source = locate(spec_files(), None, offline=True)
    assert_found_in(found, complete)
    assert "$TORCHLAB_DATA" in source


@pytest.mark.parametrize("make", ["missing", "empty", "incomplete"])
def test_an_explicit_data_dir_without_the_dataset_is_an_error_not_a_fallback(tmp_path, monkeypatch, make):
    monkeypatch.setattr(locate_module, "download", no_download)
    write_dataset(tmp_path / "env", n_train=20, n_test=10)  # would be found: it must not be used
    monkeypatch.setenv("TORCHLAB_DATA", str(tmp_path / "env"))
    data_dir = tmp_path / "data-dir"
    if make != "missing":
        data_dir.mkdir()
    if make == "incomplete":
        write_dataset(data_dir, n_train=20, n_test=10)
        (data_dir / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError) as info:
        locate(spec_files(), str(data_dir), offline=True)
    message = info.value.message
    assert message.startswith(f"dataset fashion-mnist not found in --data-dir {data_dir}"
                              + (" (no such folder); " if make == "missing" else "; "))
    assert "looked for train-images-idx3-ubyte, " in message and "(each plain or .gz) in it" in message
    assert "FashionMNIST/raw/" in message and "fashion-mnist/FashionMNIST/raw/" in message
    assert "\n" not in str(info.value) and str(tmp_path / "env") not in message
    assert "$TORCHLAB_DATA" in info.value.hint


def test_files_split_across_layouts_do_not_count(tmp_path):
    root = tmp_path / "split"
    write_dataset(root, n_train=20, n_test=10)
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    (root / "t10k-labels-idx1-ubyte.gz").rename(raw / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(UserError):
        locate(spec_files(), str(root), offline=True)


def make_sources(tmp_path, monkeypatch, which: set[str]) -> dict[str, Path]:
    folders = {
        "data_dir": tmp_path / "cli",
        "env": tmp_path / "env",
        "debian": tmp_path / "debian",
    }
    for key, folder in folders.items():
        if key in which:
            write_dataset(folder, n_train=20, n_test=10)
        else:
            folder.mkdir()
    monkeypatch.setenv("TORCHLAB_DATA", str(folders["env"]))
    use_debian_dir(monkeypatch, folders["debian"])
    monkeypatch.setattr(locate_module, "download", no_download)
    return folders


@pytest.mark.parametrize(
    "present,winner,label",
    [
        ({"data_dir", "env", "debian"}, "data_dir", "--data-dir"),
        ({"data_dir", "env"}, "data_dir", "--data-dir"),
        ({"data_dir", "debian"}, "data_dir", "--data-dir"),
        ({"env", "debian"}, "env", "$TORCHLAB_DATA"),
        ({"env"}, "env", "$TORCHLAB_DATA"),
        ({"debian"}, "debian", "Debian package"),
    ],
)
def test_lookup_order(tmp_path, monkeypatch, present, winner, label):
    folders = make_sources(tmp_path, monkeypatch, present)
    given = str(folders["data_dir"]) if "data_dir" in present else None  # an empty --data-dir is an error
    found, source = locate(spec_files(), given, offline=True)
    assert_found_in(found, folders[winner])
    assert source == f"{folders[winner]} ({label})"


def test_env_used_without_data_dir(tmp_path, monkeypatch):
    folders = make_sources(tmp_path, monkeypatch, {"env", "debian"})
    found, source = locate(spec_files(), None, offline=True)
    assert_found_in(found, folders["env"])
    assert "$TORCHLAB_DATA" in source


def test_debian_used_without_data_dir_or_env(tmp_path, monkeypatch):
    folders = make_sources(tmp_path, monkeypatch, {"debian"})
    monkeypatch.delenv("TORCHLAB_DATA")
    found, source = locate(spec_files(), None, offline=True)
    assert_found_in(found, folders["debian"])
    assert "Debian package" in source


def test_user_cache_used_last(tmp_path, monkeypatch):
    monkeypatch.setattr(locate_module, "download", no_download)
    cache = write_dataset(tmp_path / "cache" / "torchlab" / "FashionMNIST" / "raw", n_train=20, n_test=10)
    found, source = locate(spec_files(), None, offline=True)
    assert_found_in(found, cache)
    assert "user cache" in source


def test_user_cache_follows_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.setattr(locate_module, "download", no_download)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "other"))
    write_dataset(tmp_path / "cache" / "torchlab" / "FashionMNIST" / "raw", n_train=20, n_test=10)
    with pytest.raises(UserError) as info:
        locate(spec_files(), None, offline=True)
    assert str(tmp_path / "other" / "torchlab") in info.value.message


def test_relative_data_dir_resolves_against_cwd(tmp_path, monkeypatch):
    monkeypatch.setattr(locate_module, "download", no_download)
    write_dataset(tmp_path / "rel", n_train=20, n_test=10)
    found, _ = locate(spec_files(), "rel", offline=True)
    assert all(p.resolve().parent == (tmp_path / "rel").resolve() for p in found.values())


@pytest.mark.parametrize("env_offline", [True, False], ids=["env-offline", "arg-offline"])
def test_nothing_found_offline_lists_every_place(tmp_path, monkeypatch, env_offline):
    monkeypatch.setattr(locate_module, "download", no_download)
    env = tmp_path / "env-empty"
    monkeypatch.setenv("TORCHLAB_DATA", str(env))
    if not env_offline:
        monkeypatch.delenv("TORCHLAB_OFFLINE")
    with pytest.raises(UserError) as info:
        locate(spec_files(), None, offline=not env_offline)
    message = info.value.message
    assert f"$TORCHLAB_DATA {env}" in message
    assert str(tmp_path / "no-debian") in message
    assert str(tmp_path / "cache" / "torchlab") in message
    assert "offline" in message
    assert "fashion-mnist" in message
    assert "--data-dir" in info.value.hint
    assert "apt-get install dataset-fashion-mnist" in info.value.hint
    positions = [message.index(s) for s in (str(env), str(tmp_path / "no-debian"), "user cache")]
    assert positions == sorted(positions)


def test_nothing_found_without_sources_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(locate_module, "download", no_download)
    with pytest.raises(UserError) as info:
        locate(spec_files(), None, offline=True)
    assert "no --data-dir, no $TORCHLAB_DATA" in info.value.message
    assert str(tmp_path / "no-debian") in info.value.message
    assert "--data-dir" in info.value.hint


def test_offline_env_only_counts_when_exactly_1(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(locate_module, "download", lambda spec, root: calls.append(root))
    monkeypatch.setenv("TORCHLAB_OFFLINE", "0")
    with pytest.raises(UserError) as info:
        locate(spec_files(), None, offline=False)
    assert calls == [tmp_path / "cache" / "torchlab"]
    assert "files missing afterwards" in info.value.message


def fake_download(written: list):
    def download(spec, root):
        written.append((spec.name, root))
        images, labels = synthetic_split(12, seed=3)
        raw = root / spec.folder / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        from torchlab.data.idx import write_idx

        for prefix in ("train", "t10k"):
            write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
            write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)

    return download


def test_download_attempted_when_online(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHLAB_OFFLINE")
    written = []
    monkeypatch.setattr(locate_module, "download", fake_download(written))
    found, source = locate(spec_files(), None, offline=False)
    cache = tmp_path / "cache" / "torchlab"
    assert written == [("fashion-mnist", cache)]
    assert_found_in(found, cache / "FashionMNIST" / "raw", gz=False)
    assert "downloaded" in source


def test_download_not_repeated_once_cached(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHLAB_OFFLINE")
    written = []
    monkeypatch.setattr(locate_module, "download", fake_download(written))
    locate(spec_files(), None, offline=False)
    found, source = locate(spec_files(), None, offline=False)
    assert len(written) == 1
    assert "user cache" in source


def test_download_skipped_when_local_copy_found(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHLAB_OFFLINE")
    monkeypatch.setattr(locate_module, "download", no_download)
    write_dataset(tmp_path / "d", n_train=20, n_test=10)
    found, _ = locate(spec_files(), str(tmp_path / "d"), offline=False)
    assert_found_in(found, tmp_path / "d")


@pytest.mark.parametrize("error", [OSError("network unreachable"), RuntimeError("File not found or corrupted.")])
def test_failed_download_is_listed(tmp_path, monkeypatch, error):
    monkeypatch.delenv("TORCHLAB_OFFLINE")

    def failing(spec, root):
        raise error

    monkeypatch.setattr(locate_module, "download", failing)
    with pytest.raises(UserError) as info:
        locate(spec_files(), None, offline=False)
    message = info.value.message
    assert f"download into {tmp_path / 'cache' / 'torchlab'}" in message
    assert type(error).__name__ in message and str(error) in message
    assert "no --data-dir, no $TORCHLAB_DATA" in message
    assert str(tmp_path / "no-debian") in message
    assert "offline" not in message


def snapshot(folder: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


def set_tree_mode(folder: Path, file_mode: int, dir_mode: int) -> None:
    for p in folder.rglob("*"):
        p.chmod(dir_mode if p.is_dir() else file_mode)
    folder.chmod(dir_mode)


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
def test_read_only_data_folder_end_to_end(tmp_path, monkeypatch, gz):
    monkeypatch.setattr(locate_module, "download", no_download)
    root = tmp_path / "ro"
    write_dataset(root / "fashion-mnist" / "FashionMNIST" / "raw", n_train=30, n_test=12, gz=gz)
    before = snapshot(root)
    read_only_file = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
    read_only_dir = read_only_file | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
    set_tree_mode(root, read_only_file, read_only_dir)
    try:
        train, test, source = vision.load_idx_dataset(vision.DATASETS["fashion-mnist"], str(root), offline=True)
        after = snapshot(root)
        modes = {p.stat().st_mode & 0o777 for p in root.rglob("*") if p.is_file()}
    finally:
        set_tree_mode(root, 0o644, 0o755)
    assert after == before
    assert modes == {0o444}
    assert len(train) == 30 and len(test) == 12
    assert train.images.shape == (30, 1, 28, 28)
    expected_images, expected_labels = synthetic_split(30, seed=1)
    assert torch.equal(train.images[:, 0], expected_images)
    assert torch.equal(train.labels, expected_labels.long())
    assert str(root / "fashion-mnist" / "FashionMNIST" / "raw") in source
    assert not (tmp_path / "cache").exists()
