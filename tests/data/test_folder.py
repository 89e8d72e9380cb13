"""Image folders: decoding any size and mode, skipping non-images, the two layouts and the seeded split."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from torchlab.data import folder as folder_module
from torchlab.data.folder import decode, decode_native, load_folder, stored_size
from torchlab.errors import UserError

PALETTE = [0, 0, 0, 10, 200, 90] + [0] * (256 * 3 - 6)  # index 1 -> (10, 200, 90)


def save(path: Path, size=(40, 30), mode="RGB", colour=(200, 50, 25), fmt=None) -> Path:
    """A solid-colour image of `size` (w, h) in `mode`; `colour` is given as RGB and converted to the mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "P":
        img = Image.new("P", size, 1)
        img.putpalette(PALETTE)
    elif mode == "L":
        img = Image.new("L", size, colour[0])
    elif mode == "RGBA":
        img = Image.new("RGBA", size, (*colour, 128))
    else:
        img = Image.new("RGB", size, colour)
    img.save(path, format=fmt)
    return path


def expected_colour(mode, colour):
    return {"P": (10, 200, 90), "L": (colour[0],) * 3}.get(mode, colour)


def write_class(folder: Path, label: int, n: int, sizes=((40, 30), (25, 50), (33, 33))) -> None:
    """`n` PNGs of class `label`, each a different solid colour (red = 60 * label, green = 10 * i) and size."""
    for i in range(n):
        save(folder / f"img{i:02d}.png", size=sizes[i % len(sizes)], colour=(60 * label, 10 * i, 7))


def identity(images: torch.Tensor) -> list[tuple[int, int]]:
    """(class, index) of each decoded solid-colour image made by write_class."""
    return [(int(x[0, 0, 0]) // 60, int(x[1, 0, 0]) // 10) for x in images]


def make_split_folder(root: Path, counts: dict[str, int]) -> Path:
    for label, (name, n) in enumerate(counts.items()):
        write_class(root / name, label, n)
    return root


@pytest.mark.parametrize("mode, fmt, suffix", [
    ("RGB", "PNG", "png"), ("L", "PNG", "png"), ("RGBA", "PNG", "png"), ("P", "PNG", "png"), ("P", "GIF", "gif"),
    ("RGB", "JPEG", "jpg"), ("L", "JPEG", "jpg"), ("RGB", "BMP", "bmp"),
])
@pytest.mark.parametrize("size", [(40, 30), (17, 53), (8, 8)])
def test_solid_colour_decodes_to_that_colour(tmp_path, mode, fmt, suffix, size):
    colour = (200, 50, 25)
    path = save(tmp_path / f"x.{suffix}", size, mode, colour, fmt)
    x = decode(path, 12)
    assert x.shape == (3, 12, 12) and x.dtype == torch.uint8
    want = torch.tensor(expected_colour(mode, colour), dtype=torch.int16).view(3, 1, 1).expand(3, 12, 12)
    tolerance = 3 if fmt == "JPEG" else 0  # JPEG's chroma rounding
    assert (x.to(torch.int16) - want).abs().max() <= tolerance
    native = decode_native(path)
    assert native.shape == (3, size[1], size[0])


def test_rgba_drops_alpha_instead_of_compositing(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGBA", (10, 10), (0, 0, 0, 0)).save(path)  # fully transparent black
    assert decode(path, 10).max() == 0


def test_resize_keeps_aspect_and_crops_the_centre(tmp_path):
    # 60 x 20: left third red, middle green, right blue; shorter side -> 10, so 30 x 10, centre 10 x 10 is green.
    img = Image.new("RGB", (60, 20), (255, 0, 0))
    img.paste((0, 255, 0), (20, 0, 40, 20))
    img.paste((0, 0, 255), (40, 0, 60, 20))
    img.save(tmp_path / "wide.png")
    x = decode(tmp_path / "wide.png", 10)
    assert x.shape == (3, 10, 10)
    assert torch.equal(x[:, :, 2:8], torch.tensor([0, 255, 0], dtype=torch.uint8).view(3, 1, 1).expand(3, 10, 6))


def test_exif_rotation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))  # stored 40 wide, 20 high; left half red, right half blue
    img.paste((0, 0, 255), (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    img.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    x = decode_native(tmp_path / "rot.jpg")
    assert x.shape == (3, 40, 20)  # displayed 20 wide, 40 high
    top, bottom = x[:, 5, 10].tolist(), x[:, 35, 10].tolist()
    assert top[0] > 200 and top[2] < 50  # the red (left) half is now on top
    assert bottom[2] > 200 and bottom[0] < 50


@pytest.mark.parametrize("name, content", [
    ("notes.txt", b"not an image"), (".DS_Store", b"\x00\x00\x00\x01Bud1"), ("broken.jpg", b"\xff\xd8\xff\xe0junk"),
    ("empty.png", b""),
])
def test_non_images_decode_to_none(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    assert decode(tmp_path / name, 8) is None and decode_native(tmp_path / name) is None


def test_hidden_image_is_skipped(tmp_path):
    save(tmp_path / ".hidden.png")
    assert decode(tmp_path / ".hidden.png", 8) is None


def make_given_layout(root: Path, classes=("ants", "bees"), n_train=4, n_val=2, test: int = 0) -> Path:
    modes = ["RGB", "L", "RGBA", "P"]
    for c, name in enumerate(classes):
        for i in range(n_train):
            size = ((40, 30), (30, 41), (64, 20), (19, 19))[i % 4]
            fmt = "JPEG" if modes[i % 4] in ("RGB", "L") else "PNG"
            save(root / "train" / name / f"t{i}.{fmt.lower()}", size, modes[i % 4], (50 + 100 * c, 80, 20), fmt)
        for i in range(n_val):
            save(root / "val" / name / f"v{i}.png", (30 + i, 30), colour=(50 + 100 * c, 80, 20))
        for i in range(test):
            save(root / "test" / name / f"s{i}.png", (20, 30 + i), colour=(50 + 100 * c, 80, 20))
    return root


def test_train_and_val_used_as_given(tmp_path):
    root = make_given_layout(tmp_path / "d")
    (root / "train" / "ants" / "notes.txt").write_text("hello")
    (root / "train" / "bees" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "val" / "bees" / "readme.md").write_text("hi")
    (root / "train" / ".git").mkdir()  # hidden folders are not classes
    data = load_folder(root, size=16, val_fraction=0.2, seed=0)
    assert data.classes == ("ants", "bees")
    assert stored_size(16) == 18
    assert data.train.images.shape == (8, 3, 18, 18) and data.train.images.dtype == torch.uint8
    assert data.train.labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1] and data.train.labels.dtype == torch.int64
    assert data.val.images.shape == (4, 3, 16, 16) and data.val.labels.tolist() == [0, 0, 1, 1]
    assert data.test is None
    assert data.skipped == 2  # notes.txt and readme.md; hidden files are ignored, not counted
    assert data.layout == "train/ and val/ as given"


def test_val_is_the_centre_of_the_stored_square(tmp_path):
    root = make_given_layout(tmp_path / "d", n_train=1, n_val=0)
    img = Image.effect_noise((50, 37), 80).convert("RGB")  # every pixel different
    for name in ("ants", "bees"):
        (root / "val" / name).mkdir(parents=True)
        img.save(root / "val" / name / "n.png")
    data = load_folder(root, size=16, val_fraction=0.2, seed=0)
    stored = decode(root / "val" / "ants" / "n.png", 18)
    assert torch.equal(data.val.images[0], stored[:, 1:17, 1:17])


def test_test_folder_used_when_present(tmp_path):
    root = make_given_layout(tmp_path / "d", test=3)
    data = load_folder(root, size=8, val_fraction=0.2, seed=0)
    assert data.test.images.shape == (6, 3, 8, 8) and data.test.labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_train_val_class_mismatch(tmp_path):
    root = make_given_layout(tmp_path / "d")
    save(root / "val" / "wasps" / "w.png")
    with pytest.raises(UserError) as info:
        load_folder(root, size=8, val_fraction=0.2, seed=0)
    assert "ants, bees, wasps" in info.value.message and "ants, bees" in info.value.message


def test_test_class_mismatch(tmp_path):
    root = make_given_layout(tmp_path / "d", test=1)
    (root / "test" / "bees" / "s0.png").rename(root / "test" / "ants" / "s9.png")
    (root / "test" / "bees").rmdir()
    with pytest.raises(UserError, match="differ from the training classes"):
        load_folder(root, size=8, val_fraction=0.2, seed=0)


@pytest.mark.parametrize("where", ["train", "val"])
def test_empty_class_folder_is_named(tmp_path, where):
    root = make_given_layout(tmp_path / "d")
    for p in (root / where / "bees").iterdir():
        p.unlink()
    (root / where / "bees" / "notes.txt").write_text("only text here")
    with pytest.raises(UserError) as info:
        load_folder(root, size=8, val_fraction=0.2, seed=0)
    assert str(root / where / "bees") in info.value.message and "'bees' holds no images" in info.value.message


def test_no_class_folders(tmp_path):
    root = tmp_path / "flat"
    save(root / "a.png")
    (root / ".hidden").mkdir()
    with pytest.raises(UserError, match="no class sub-folders"):
        load_folder(root, size=8, val_fraction=0.2, seed=0)


@pytest.mark.parametrize("make", ["missing", "file"])
def test_not_a_folder(tmp_path, make):
    path = tmp_path / "x"
    if make == "file":
        path.write_text("x")
    with pytest.raises(UserError) as info:
        load_folder(path, size=8, val_fraction=0.2, seed=0)
    assert f"--data-dir {path}: not a folder" in info.value.message


def test_one_folder_split_is_stratified(tmp_path):
    counts = {"a": 10, "b": 7, "c": 5}
    root = make_split_folder(tmp_path / "d", counts)
    data = load_folder(root, size=8, val_fraction=0.3, seed=0)
    assert data.classes == ("a", "b", "c")
    assert data.layout == "one folder, 30% of each class held out (seed 0)"
    held = {0: 3, 1: 2, 2: 2}  # round(0.3 * n): 3.0, 2.1, 1.5 -> at least one each
    for label, n in enumerate(counts.values()):
        assert (data.val.labels == label).sum() == held[label]
        assert (data.train.labels == label).sum() == n - held[label]
    assert data.train.images.shape[1:] == (3, 9, 9) and data.val.images.shape[1:] == (3, 8, 8)
    train_ids, val_ids = identity(data.train.images), identity(data.val.images)
    assert sorted(train_ids + val_ids) == [(c, i) for c, n in enumerate(counts.values()) for i in range(n)]
    assert [c for c, _ in train_ids] == data.train.labels.tolist()  # labels travel with their images
    assert [c for c, _ in val_ids] == data.val.labels.tolist()


def test_split_is_seeded(tmp_path):
    root = make_split_folder(tmp_path / "d", {"a": 10, "b": 10})
    first = load_folder(root, size=8, val_fraction=0.2, seed=1)
    again = load_folder(root, size=8, val_fraction=0.2, seed=1)
    other = load_folder(root, size=8, val_fraction=0.2, seed=2)
    assert identity(first.val.images) == identity(again.val.images)
    assert torch.equal(first.train.images, again.train.images)
    assert identity(first.val.images) != identity(other.val.images)
    assert sorted(identity(first.train.images) + identity(first.val.images)) == \
        sorted(identity(other.train.images) + identity(other.val.images))


def test_split_not_just_the_first_files(tmp_path):
    root = make_split_folder(tmp_path / "d", {"a": 20, "b": 20})
    held = {i for seed in range(5) for c, i in identity(load_folder(root, 8, 0.2, seed).val.images)}
    assert len(held) > 8  # different seeds hold out different files, from all over the sorted list


def test_no_validation_with_fraction_zero(tmp_path):
    root = make_split_folder(tmp_path / "d", {"a": 3, "b": 2})
    data = load_folder(root, size=8, val_fraction=0, seed=0)
    assert data.val is None and data.test is None and len(data.train) == 5


def test_class_too_small_to_split(tmp_path):
    root = make_split_folder(tmp_path / "d", {"a": 5, "b": 1})
    with pytest.raises(UserError, match="only 1 images"):
        load_folder(root, size=8, val_fraction=0.2, seed=0)


def test_skipped_files_are_counted_in_one_folder_layout(tmp_path):
    root = make_split_folder(tmp_path / "d", {"a": 4, "b": 4})
    (root / "a" / "notes.txt").write_text("x")
    (root / "b" / ".DS_Store").write_bytes(b"\x00")
    (root / ".DS_Store").write_bytes(b"\x00")  # at the top: not in any class, not counted
    assert load_folder(root, size=8, val_fraction=0.25, seed=0).skipped == 1  # notes.txt; hidden files are ignored, not counted


def test_expands_user(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    make_split_folder(tmp_path / "d", {"a": 2, "b": 2})
    assert len(load_folder("~/d", size=8, val_fraction=0.5, seed=0).val) == 2


def test_stored_size():
    assert [stored_size(s) for s in (7, 16, 32, 64, 224)] == [8, 18, 36, 73, 256]
    assert folder_module.stored_size is stored_size


def test_train_and_test_without_val_holds_out_from_train(tmp_path):
    """train/ + test/ and no val/: the sub-folders are splits, not classes; val comes out of train."""
    root = tmp_path / "d"
    make_split_folder(root / "train", {"ants": 5, "bees": 5})
    make_split_folder(root / "test", {"ants": 2, "bees": 2})
    data = load_folder(root, size=8, val_fraction=0.2, seed=0)
    assert data.classes == ("ants", "bees")
    assert len(data.train) == 8 and len(data.val) == 2 and len(data.test) == 4
    assert "held out" in data.layout and "test/ as given" in data.layout


def test_hidden_sub_folders_inside_a_class_are_ignored(tmp_path):
    root = make_split_folder(tmp_path / "d", {"a": 3, "b": 3})
    save(root / "a" / ".ipynb_checkpoints" / "copy-checkpoint.png")
    data = load_folder(root, size=8, val_fraction=0, seed=0)
    assert len(data.train) == 6 and data.skipped == 0
