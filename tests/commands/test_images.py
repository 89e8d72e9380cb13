"""`torchlab image`: shapes checked against NumPy and ToTensor themselves, TensorBoard logs read back, errors."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from PIL import Image
from torchvision.transforms import ToTensor

from torchlab.cli import main

W, H = 7, 5  # not square, so (W, H) and (H, W) cannot be confused


def make_files(folder) -> dict[str, str]:
    """One small file per mode worth knowing: name -> path."""
    rng = np.random.default_rng(0)
    rgba = Image.fromarray(rng.integers(0, 256, (H, W, 4), dtype=np.uint8), "RGBA")
    images = {
        "gray.png": rgba.convert("L"), "bits.png": rgba.convert("1"), "la.png": rgba.convert("LA"),
        "rgb.png": rgba.convert("RGB"), "rgba.png": rgba, "pal.png": rgba.convert("RGB").convert("P"),
        "deep.png": Image.fromarray(rng.integers(0, 65536, (H, W)).astype(np.uint16)),  # mode I;16, some > 32767
        "int.tiff": Image.fromarray(rng.integers(-70000, 70000, (H, W)).astype(np.int32)),  # mode I
        "float.tiff": Image.fromarray(rng.normal(0, 300, (H, W)).astype(np.float32)),  # mode F
        "cmyk.tiff": rgba.convert("CMYK"),
    }
    paths = {}
    for name, img in images.items():
        img.save(folder / name)
        paths[name] = str(folder / name)
    trans = rgba.convert("RGB").convert("P")
    trans.save(folder / "paltrans.png", transparency=0)  # palette entry 0 is transparent
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees to view
    rgba.convert("RGB").save(folder / "photo.jpg", exif=exif)
    frames = [rgba.convert("P"), rgba.convert("P").transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    for name in ("paltrans.png", "photo.jpg", "anim.gif"):
        paths[name] = str(folder / name)
    return paths


@pytest.fixture
def files(tmp_path):
    return make_files(tmp_path)


def oracle(path: str) -> dict:
    img = Image.open(path)
    array, tensor = np.asarray(img), ToTensor()(img)
    return {"mode": img.mode, "array": array, "tensor": tensor}


def test_text_report_matches_numpy_and_totensor(files, capsys):
    assert main(["image", *files.values()]) == 0
    out = capsys.readouterr().out
    assert "size is Pillow's (W, H)" in out and "(C, H, W)" in out
    for path in files.values():
        o = oracle(path)
        block = out.split(path + ":")[1].split("\n/")[0]
        assert f"mode {o['mode']} " in block and f"size {W} x {H} (W x H)" in block
        assert f"np.asarray(img)  shape {o['array'].shape}  {o['array'].dtype}" in block
        assert f"ToTensor()(img)  shape {tuple(o['tensor'].shape)}  {str(o['tensor'].dtype)[6:]}" in block


def test_json_report_per_mode(files, capsys):
    assert main(["image", *files.values(), "--json"]) == 0
    reports = {r["file"].rsplit("/", 1)[1]: r for r in json.loads(capsys.readouterr().out)}
    for name, path in files.items():
        r, o = reports[name], oracle(path)
        assert r["size"] == [W, H] and r["array"]["shape"] == list(o["array"].shape)
        assert r["tensor"]["shape"] == list(o["tensor"].shape) and r["tensor"]["shape"][1:] == [H, W]
        assert r["tensor"]["min"] == float(o["tensor"].min()) and r["tensor"]["max"] == float(o["tensor"].max())
    notes = {name: " ".join(r["notes"]) for name, r in reports.items()}
    values = {name: r["tensor"]["values"] for name, r in reports.items()}
    assert values["rgb.png"] == values["cmyk.tiff"] == values["pal.png"] == "array / 255" and not notes["rgb.png"]
    assert values["bits.png"] == "unchanged" and "bool" in notes["bits.png"]
    assert reports["deep.png"]["mode"] == "I;16" and reports["deep.png"]["tensor"]["dtype"] == "int16"
    assert values["deep.png"] == "wrapped to int16" and "wrap" in notes["deep.png"]  # torchvision reads I;16 as int16
    assert values["int.tiff"] == values["float.tiff"] == "unchanged" and "raw values" in notes["float.tiff"]
    assert "palette indices" in notes["pal.png"] and "'RGBA'" in notes["paltrans.png"] and "'RGBA'" not in notes["pal.png"]
    assert "not RGB" in notes["cmyk.tiff"] and reports["cmyk.tiff"]["tensor"]["shape"][0] == 4
    assert "alpha" in notes["la.png"] and "alpha" in notes["rgba.png"]
    assert "EXIF orientation 6" in notes["photo.jpg"] and "2 frames" in notes["anim.gif"]


def test_logdir_images_read_back(files, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (tmp_path / "tb").mkdir()
    (tmp_path / "tb" / "older-run.txt").write_text("kept")
    assert main(["image", *files.values(), "--logdir", "tb"]) == 0
    assert "view them with: torchlab tensorboard tb" in capsys.readouterr().err
    assert json.loads((tmp_path / "tb" / "demo.json").read_text())["demo"] == "image"
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    events.Reload()
    decoded = {tag: Image.open(io.BytesIO(events.Images(tag)[-1].encoded_image_string))
               for tag in events.Tags()["images"]}
    alpha = {"la", "rgba", "paltrans"}  # shown as RGBA; everything else as RGB (TensorBoard repeats gray 3 times)
    for name in files:
        stem = name.split(".")[0]
        for kind in ("array", "tensor"):
            img = decoded.pop(f"image/{stem}/{kind}")
            assert img.size == (W, H) and img.mode == ("RGBA" if stem in alpha else "RGB"), (stem, kind)
    n = len(files)  # the batch: one grid of 128 x 128 tiles, 8 per row
    assert decoded.pop("images/batch").size == (min(n, 8) * 128, math.ceil(n / 8) * 128) and not decoded
    assert (tmp_path / "tb" / "older-run.txt").read_text() == "kept"


def test_same_stem_gets_its_own_tag(files, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main(["image", files["rgb.png"], files["gray.png"], files["rgb.png"], "--logdir", "tb"]) == 0
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert {"image/rgb/array", "image/rgb-2/array", "image/gray/array"} <= set(events.Tags()["images"])


def damaged(tmp_path, kind: str) -> str:
    if kind == "missing":
        return str(tmp_path / "nothere.png")
    if kind == "text":
        (tmp_path / "notes.png").write_text("not an image\n")
        return str(tmp_path / "notes.png")
    ext = {"png": "PNG", "jpg": "JPEG"}[kind]
    data = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(data, ext)
    path = tmp_path / f"cut.{kind}"
    path.write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    return str(path)


def failed(capsys, code: int) -> str:
    """Like test_cli.one_line_error, and also nothing on stdout: the one error line."""
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("torchlab: error: "), lines
    return lines[0]


@pytest.mark.parametrize("kind, fragment", [("missing", "no such file"), ("text", "not an image"),
                                            ("png", "damaged image"), ("jpg", "damaged image")])
def test_bad_file_is_one_line_and_nothing_is_logged(files, tmp_path, capsys, kind, fragment):
    bad = damaged(tmp_path, kind)
    line = failed(capsys, main(["image", files["rgb.png"], bad, "--logdir", "tb"]))
    assert bad in line and fragment in line and not (tmp_path / "tb").exists()


def test_bad_logdir_is_one_line(files, tmp_path, capsys):
    (tmp_path / "taken").write_text("a file, not a folder")
    line = failed(capsys, main(["image", files["rgb.png"], "--logdir", "taken"]))
    assert "--logdir taken: cannot create" in line


def test_cv2_reader_shows_bgr_and_what_swapping_does(tmp_path, capsys):
    cv2 = pytest.importorskip("cv2")
    rgb = np.zeros((6, 8, 3), dtype=np.uint8)
    rgb[..., 0] = 200  # a red picture: R 200, G 30, B 10
    rgb[..., 1], rgb[..., 2] = 30, 10
    path = tmp_path / "red.png"
    Image.fromarray(rgb).save(path)
    assert main(["image", str(path), "--reader", "cv2", "--json"]) == 0
    c = json.loads(capsys.readouterr().out)[0]["cv2"]
    assert c["array"] == {"shape": [6, 8, 3], "dtype": "uint8", "order": "BGR"}
    assert c["centre_pixel_bgr"] == [10, 30, 200] == cv2.imread(str(path))[3, 4].tolist()
    assert c["centre_pixel_pil_rgb"] == [200, 30, 10]
    assert c["channel_means_as_read"] == pytest.approx([10 / 255, 30 / 255, 200 / 255], abs=1e-4)
    assert c["max_difference_bgr_vs_rgb"] == pytest.approx(190 / 255, abs=1e-6)
    assert c["max_difference_after_bgr2rgb"] == 0.0
    assert main(["image", str(path), "--reader", "cv2"]) == 0
    out = capsys.readouterr().out
    assert "channels in BGR order" in out and "cv2.COLOR_BGR2RGB" in out and "channel 0 is blue" in out


def test_cv2_reader_names_a_file_opencv_cannot_read(tmp_path, capsys, monkeypatch):
    pytest.importorskip("cv2")
    path = tmp_path / "odd.png"
    Image.new("RGB", (4, 4)).save(path)
    monkeypatch.setattr("cv2.imread", lambda *a: None)  # what imread does with a file it cannot decode
    assert main(["image", str(path), "--reader", "cv2"]) == 2
    assert f"{path}: OpenCV cannot read this file" in capsys.readouterr().err
