"""`torchlab conv-viz`: the hand-made convolution against F.conv2d, the shape formula, the command end to end."""

import itertools
import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tests.conftest import TINY, write_dataset
from tests.test_cli import one_line_error
from torchlab.cli import main
from torchlab.models.cnn import conv_out
from torchlab.commands.convviz import conv2d_by_hand, output_size

SIZES = [(5, 5), (7, 9), (12, 5), (8, 8), (11, 6)]  # square, non-square, odd
TAGS = {"conv/input", "conv/output", "conv/pooled", "conv/kernels"}
pytestmark = pytest.mark.usefixtures("one_thread")


def grid_px(count: int, per_row: int, tile_h: int, tile_w: int, pad: int = 2) -> tuple[int, int]:
    """(width, height) of a torchvision make_grid picture."""
    cols, rows = min(per_row, count), -(-count // per_row)
    return cols * (tile_w + pad) + pad, rows * (tile_h + pad) + pad




@pytest.mark.parametrize("kernel, stride, padding", list(itertools.product(range(1, 6), range(1, 4), range(3))))
def test_conv2d_by_hand_equals_conv2d(kernel, stride, padding):
    g = torch.Generator().manual_seed(kernel * 100 + stride * 10 + padding)
    for (h, w), channels in itertools.product(SIZES, (1, 3)):
        x = torch.randn(3, channels, h, w, generator=g)
        weight = torch.randn(4, channels, kernel, kernel, generator=g)
        bias = torch.randn(4, generator=g)
        if kernel > min(h, w) + 2 * padding:  # nothing to compute: refused, as F.conv2d refuses it
            with pytest.raises(ValueError):
                conv2d_by_hand(x, weight, bias, stride, padding)
            continue
        for b in (bias, None):
            expected = F.conv2d(x, weight, b, stride, padding)
            got = conv2d_by_hand(x, weight, b, stride, padding)
            assert got.shape == expected.shape
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_conv2d_by_hand_non_square_kernel_stride_and_padding():
    x, weight = torch.randn(2, 3, 10, 9), torch.randn(5, 3, 3, 2)
    torch.testing.assert_close(conv2d_by_hand(x, weight, None, (2, 1), (1, 0)),
                               F.conv2d(x, weight, None, (2, 1), (1, 0)), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="channels"):
        conv2d_by_hand(x, torch.randn(5, 1, 3, 3))


def test_output_size_formula_equals_real_shapes():
    x = torch.zeros(1, 1, 13, 13)
    for h, w, k, s, p in itertools.product(range(1, 14, 3), range(2, 14, 5), range(1, 6), range(1, 4), range(3)):
        if k > min(h, w) + 2 * p:
            continue
        assert output_size(h, w, k, s, p) == (conv_out(h, k, s, p), conv_out(w, k, s, p))
        assert F.conv2d(x[..., :h, :w], torch.zeros(1, 1, k, k), stride=s, padding=p).shape[2:] == output_size(h, w, k, s, p)
        if p <= k // 2:  # max_pool2d allows at most half the window as padding
            assert F.max_pool2d(x[..., :h, :w], k, s, p).shape[2:] == output_size(h, w, k, s, p)


def events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return set(acc.Tags()["images"])


def png_size(path):
    with Image.open(path) as img:
        return img.size


def test_dataset_run_writes_pngs_and_tensorboard(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", n_train=20, n_test=10)
    assert main(["conv-viz", "--dataset", "fashion-mnist", "--data-dir", str(data), "--out", "cv"]) == 0
    out = capsys.readouterr().out
    assert "(28 + 2*0 - 3) // 1 + 1 = 26" in out and "tensor [8, 6, 26, 26]" in out and "tensor [8, 6, 13, 13]" in out
    assert "torchlab tensorboard cv" in out and "tensorboard --logdir" not in out  # the venv may be inactive
    assert json.loads((tmp_path / "cv" / "demo.json").read_text())["demo"] == "conv-viz"
    assert png_size(tmp_path / "cv/input.png") == grid_px(8, 8, 28, 28)
    assert png_size(tmp_path / "cv/output.png") == grid_px(8 * 6, 6, 26, 26)  # a row per image, a tile per channel
    assert png_size(tmp_path / "cv/pooled.png") == grid_px(8 * 6, 6, 13, 13)
    assert png_size(tmp_path / "cv/kernels.png") == grid_px(6, 8, 30, 30)  # 3x3 drawn 10 times larger
    assert events(tmp_path / "cv") == TAGS

    assert main(["conv-viz", "--dataset", "fashion-mnist", "--data-dir", str(data), "--out", "cv2", "--json",
                 "--count", "3", "--out-channels", "4", "--kernel-size", "5", "--stride", "2", "--padding", "2",
                 "--pool", "3"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["conv"]["shape"] == r["conv"]["expected_shape"] == [3, 4, 14, 14]
    assert r["pool_step"]["shape"] == r["pool_step"]["expected_shape"] == [3, 4, 4, 4]
    assert r["weight_shape"] == [4, 1, 5, 5] and r["unfold_shape"] == [3, 25, 196]
    assert r["max_abs_diff"] < 1e-4 and [f.split("/")[-1] for f in r["files"]] == ["input.png", "output.png",
                                                                                   "pooled.png", "kernels.png"]


def image_folder(folder, gray=False):
    folder.mkdir()
    mode = "L" if gray else "RGB"
    Image.new(mode, (80, 50), 200).save(folder / "a.png")
    Image.new(mode, (40, 60), 90).save(folder / "b.jpg")
    Image.new("L", (30, 30), 30).save(folder / "c.bmp")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_image_folder_mixed_sizes_and_a_skipped_file(tmp_path, capsys):
    folder = image_folder(tmp_path / "imgs")
    assert main(["conv-viz", "--images", str(folder), "--size", "16", "--out", "cv", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["input_shape"] == [3, 3, 16, 16] and r["conv"]["shape"] == [3, 6, 14, 14]  # RGB: not all grayscale
    assert "skipped 1 non-image file" in r["source"] and "3 of 3 images" in r["source"]
    assert png_size(tmp_path / "cv/input.png") == grid_px(3, 8, 16, 16)
    assert png_size(tmp_path / "cv/output.png") == grid_px(3 * 6, 6, 14, 14)
    assert events(tmp_path / "cv") == TAGS

    gray = image_folder(tmp_path / "gray", gray=True)
    assert main(["conv-viz", "--images", str(gray), "--count", "2", "--out", "cv2", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["input_shape"] == [2, 1, 64, 64] and r["weight_shape"] == [6, 1, 3, 3]  # all grayscale: L


def test_checkpoint_uses_the_first_conv_layer(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", n_train=200, n_test=20)
    assert main(["train", "fashion-mnist", "--data-dir", str(data), *TINY, "--epochs", "1", "--max-steps", "2",
                 "--run-dir", "run"]) == 0
    capsys.readouterr()
    assert main(["conv-viz", "--dataset", "fashion-mnist", "--data-dir", str(data), "--checkpoint", "run",
                 "--count", "2", "--out", "cv"]) == 0
    captured = capsys.readouterr()
    assert "nn.Conv2d(1, 32, kernel_size=5, stride=1, padding=1)" in captured.out
    assert "tensor [2, 32, 26, 26]" in captured.out and "out-channels 32" in captured.err
    assert png_size(tmp_path / "cv/kernels.png") == grid_px(32, 8, 30, 30)

    rgb = image_folder(tmp_path / "imgs")
    assert main(["conv-viz", "--images", str(rgb), "--checkpoint", "run", "--out", "cv2"]) == 0
    assert "converted RGB -> L" in capsys.readouterr().out
    assert main(["conv-viz", "--images", str(rgb), "--checkpoint", "run", "--out", "cv4", "--json"]) == 0
    captured = capsys.readouterr()
    r = json.loads(captured.out)
    assert "RGB -> L" in captured.err and r["input_shape"] == [3, 1, 64, 64] and r["out_channels"] == 32
    ckpt = torch.load(tmp_path / "run/best.pt", weights_only=True)
    assert r["normalised"] == {"mean": list(ckpt["mean"]), "std": list(ckpt["std"])}  # the checkpoint's, not 0 and 1

    code = main(["conv-viz", "--dataset", "fashion-mnist", "--data-dir", str(data), "--checkpoint", "run",
                 "--kernel-size", "3", "--out", "cv3"])
    one_line_error(capsys, code, "--kernel-size 3", "has 5")
    assert not (tmp_path / "cv3").exists()


def test_error_paths(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", n_train=20, n_test=10)
    (tmp_path / "empty").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    ds = ["--dataset", "fashion-mnist", "--data-dir", str(data)]
    cases = [
        (["conv-viz"], ["exactly one of --dataset NAME or --images DIR"]),
        (["conv-viz", *ds, "--images", "empty"], ["exactly one of"]),
        (["conv-viz", "--images", "empty"], ["--images empty: no image files"]),
        (["conv-viz", "--images", "nowhere"], ["--images nowhere: not a folder"]),
        (["conv-viz", *ds, "--kernel-size", "40"], ["--kernel-size 40 is larger than the padded input (28 + 2*0 = 28)"]),
        (["conv-viz", *ds, "--pool", "30"], ["--pool 30"]),
        (["conv-viz", *ds, "--stride", "0"], ["--stride 0: must be at least 1"]),
        (["conv-viz", "--dataset", "cifar100"], ["--dataset cifar100: unknown dataset", "fashion-mnist"]),
        (["conv-viz", *ds, "--out", "full"], ["--out full: already holds files"]),
        (["conv-viz", *ds, "--checkpoint", "missing.pt"], ["missing.pt: no such checkpoint"]),
    ]
    for argv, fragments in cases:
        one_line_error(capsys, main(argv), *fragments)
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    assert not (tmp_path / "runs").exists()  # no error left an output folder behind


def test_channels_follow_the_layer():
    from torchlab.commands.convviz import match_channels

    rgb = torch.rand(2, 3, 4, 4)
    gray, (note, shown) = match_channels(rgb, 1)  # English for the JSON, and as shown (also English here)
    assert gray.shape == (2, 1, 4, 4) and "RGB -> L" in note and shown == note
    torch.testing.assert_close(gray[:, 0], 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2])
    back, (note, _shown) = match_channels(gray, 3)
    assert back.shape == (2, 3, 4, 4) and "L -> RGB" in note and torch.equal(back[:, 2], gray[:, 0])
    assert match_channels(rgb, 3) == (rgb, ("", ""))
