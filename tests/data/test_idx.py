from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pytest
import torch

from torchlab.data.idx import parse_idx, read_idx, write_idx
from torchlab.errors import UserError


def labels_tensor(n: int = 37) -> torch.Tensor:
    return (torch.arange(n) * 7 % 256).to(torch.uint8)


def images_tensor(n: int = 5, h: int = 28, w: int = 28) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, h, w), generator=g, dtype=torch.uint8)


def header(ndim: int, dims, type_code: int = 0x08) -> bytes:
    return bytes([0, 0, type_code, ndim]) + b"".join(int(d).to_bytes(4, "big") for d in dims)


def raw_idx(tensor: torch.Tensor) -> bytes:
    return header(tensor.dim(), tensor.shape) + tensor.numpy().tobytes()


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("tensor", [labels_tensor(), labels_tensor(1), images_tensor(), images_tensor(3, 5, 7)],
                         ids=["labels", "one-label", "images", "non-square-images"])
def test_write_read_round_trip(tmp_path, suffix, tensor):
    path = tmp_path / f"file-idx{tensor.dim()}-ubyte{suffix}"
    write_idx(path, tensor)
    back = read_idx(path, tensor.dim())
    assert back.dtype == torch.uint8
    assert back.shape == tensor.shape
    assert torch.equal(back, tensor)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_written_bytes_are_the_idx_format(tmp_path, suffix):
    tensor = images_tensor(2, 3, 4)
    path = tmp_path / f"x{suffix}"
    write_idx(path, tensor)
    data = gzip.decompress(path.read_bytes()) if suffix else path.read_bytes()
    assert data == raw_idx(tensor)
    if suffix:
        assert path.read_bytes()[:2] == b"\x1f\x8b"


def test_parse_idx_decodes_big_endian_dims():
    data = header(3, [2, 1, 300]) + bytes(range(256)) * 2 + bytes(88)
    out = parse_idx(data, Path("p"), 3)
    assert out.shape == (2, 1, 300)
    assert out[0, 0, 255].item() == 255 and out[0, 0, 256].item() == 0
    assert out[1, 0, 299].item() == 0 and out[1, 0, 0].item() == 44


@pytest.mark.parametrize("cut", [1, 10, 783])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_truncated_data_names_path(tmp_path, cut, suffix):
    data = raw_idx(images_tensor(2))[:-cut]
    path = tmp_path / f"images{suffix}"
    path.write_bytes(gzip.compress(data) if suffix else data)
    with pytest.raises(UserError) as info:
        read_idx(path, 3)
    assert str(path) in info.value.message
    assert "truncated" in info.value.message


@pytest.mark.parametrize("ndim,length", [(3, 4), (3, 8), (3, 15), (1, 4), (1, 7)])
def test_file_shorter_than_header_names_path(tmp_path, ndim, length):
    data = header(ndim, [10] * ndim)[:length]
    path = tmp_path / "short"
    path.write_bytes(data)
    with pytest.raises(UserError) as info:
        read_idx(path, ndim)
    assert str(path) in info.value.message
    assert "truncated" in info.value.message


@pytest.mark.parametrize("length", [0, 1, 3])
def test_file_shorter_than_magic_names_path(tmp_path, length):
    path = tmp_path / "tiny"
    path.write_bytes(bytes([0, 0, 8])[:length])
    with pytest.raises(UserError) as info:
        read_idx(path, 1)
    assert str(path) in info.value.message


@pytest.mark.parametrize(
    "magic,ndim",
    [
        (bytes([0, 0, 9, 2]), 3),  # 0x00000902
        (bytes([0, 0, 8, 1]), 3),  # labels file read as images
        (bytes([0, 0, 8, 3]), 1),  # images file read as labels
        (bytes([0, 0, 0x09, 3]), 3),  # signed byte
        (bytes([0, 0, 0x0D, 3]), 3),  # float
        (bytes([1, 0, 8, 3]), 3),
        (bytes([0, 1, 8, 3]), 3),
        (b"\x1f\x8b\x08\x00", 3),  # a gzip file without the .gz name
    ],
)
def test_wrong_magic_names_path(tmp_path, magic, ndim):
    path = tmp_path / "bad-magic-ubyte"
    path.write_bytes(magic + header(ndim, [1] * ndim)[4:] + b"\x00")
    with pytest.raises(UserError) as info:
        read_idx(path, ndim)
    assert str(path) in info.value.message
    assert "magic" in info.value.message
    assert magic.hex() in info.value.message


@pytest.mark.parametrize("extra", [1, 100])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_file_longer_than_header_says(tmp_path, extra, suffix):
    data = raw_idx(labels_tensor(20)) + bytes(extra)
    path = tmp_path / f"labels{suffix}"
    path.write_bytes(gzip.compress(data) if suffix else data)
    with pytest.raises(UserError) as info:
        read_idx(path, 1)
    assert str(path) in info.value.message
    assert "longer" in info.value.message


def test_gzip_header_then_garbage_names_path(tmp_path):
    good = gzip.compress(raw_idx(images_tensor(2)))
    path = tmp_path / "garbage.gz"
    path.write_bytes(good[:10] + bytes(range(256)) * 4)
    with pytest.raises(UserError) as info:
        read_idx(path, 3)
    assert str(path) in info.value.message


@pytest.mark.parametrize("fraction", [0.5, 0.1, 0.9])
def test_gzip_cut_short_names_path(tmp_path, fraction):
    good = gzip.compress(raw_idx(images_tensor(4)))
    path = tmp_path / "cut.gz"
    path.write_bytes(good[: int(len(good) * fraction)])
    with pytest.raises(UserError) as info:
        read_idx(path, 3)
    assert str(path) in info.value.message


def test_gzip_corrupt_crc_names_path(tmp_path):
    good = bytearray(gzip.compress(raw_idx(labels_tensor(50))))
    good[-5] ^= 0xFF  # last byte of the CRC32 trailer
    path = tmp_path / "crc.gz"
    path.write_bytes(bytes(good))
    with pytest.raises(UserError) as info:
        read_idx(path, 1)
    assert str(path) in info.value.message


def test_plain_data_named_gz_names_path(tmp_path):
    path = tmp_path / "plain.gz"
    path.write_bytes(raw_idx(labels_tensor()))
    with pytest.raises(UserError) as info:
        read_idx(path, 1)
    assert str(path) in info.value.message


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_checksum_mismatch_at_original_size_raises(tmp_path, suffix):
    tensor = labels_tensor(30)
    path = tmp_path / f"labels{suffix}"
    write_idx(path, tensor)
    data = raw_idx(tensor)
    wrong = hashlib.md5(data + b"x").hexdigest()
    with pytest.raises(UserError) as info:
        read_idx(path, 1, original=(wrong, len(data)))
    assert str(path) in info.value.message
    assert "checksum" in info.value.message


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_checksum_of_decompressed_bytes_passes(tmp_path, suffix):
    tensor = images_tensor(3)
    path = tmp_path / f"images{suffix}"
    write_idx(path, tensor)
    data = raw_idx(tensor)
    assert torch.equal(read_idx(path, 3, original=(hashlib.md5(data).hexdigest(), len(data))), tensor)


@pytest.mark.parametrize("delta", [-1, 1, 1000])
def test_checksum_not_checked_when_size_differs(tmp_path, delta):
    tensor = labels_tensor(30)
    path = tmp_path / "labels"
    write_idx(path, tensor)
    size = len(raw_idx(tensor)) + delta
    assert torch.equal(read_idx(path, 1, original=("0" * 32, size)), tensor)


@pytest.mark.parametrize("name", ["missing", "missing.gz"])
def test_missing_file_names_path(tmp_path, name):
    path = tmp_path / name
    with pytest.raises(UserError) as info:
        read_idx(path, 1)
    assert str(path) in info.value.message
    assert info.value.hint


def test_directory_instead_of_file_names_path(tmp_path):
    path = tmp_path / "dir"
    path.mkdir()
    with pytest.raises(UserError) as info:
        read_idx(path, 1)
    assert str(path) in info.value.message


def test_header_dims_overflowing_int64_raise_user_error(tmp_path):
    path = tmp_path / "overflow"
    path.write_bytes(header(3, [2**31, 2**31, 4]))
    with pytest.raises(UserError) as info:
        read_idx(path, 3)
    assert str(path) in info.value.message
