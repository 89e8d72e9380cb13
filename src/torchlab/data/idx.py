"""Reader for the IDX files that MNIST and Fashion-MNIST ship in.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number
of dimensions), one big-endian uint32 per dimension, then the raw values.
Only unsigned bytes (type 0x08) are used by these datasets.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from torchlab.errors import UserError
from torchlab.i18n import N_, _

UBYTE = 0x08
REPAIR_HINT = N_("delete it and fetch the dataset again (or point --data-dir at a good copy)")


def read_bytes(path: Path) -> bytes:
    """Whole file contents, gunzipped when the name ends in .gz."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise UserError(_("{path}: cannot read ({error})").format(path=path, error=e), _(REPAIR_HINT)) from None


def parse_idx(data: bytes, path: Path, ndim: int) -> torch.Tensor:
    """Decode IDX bytes into a uint8 tensor, checking magic, dims and size."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != UBYTE or data[3] != ndim:
        raise UserError(
            _("{path}: not an IDX file of unsigned bytes with {ndim} dimension(s) (magic number {magic})")
            .format(path=path, ndim=ndim, magic=data[:4].hex() or _('missing')),
            _(REPAIR_HINT),
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(_("{path}: truncated IDX header").format(path=path), _(REPAIR_HINT))
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + math.prod(dims)  # exact: a corrupt header must not overflow
    if len(data) != expected:
        message = _("{path}: truncated ({size} bytes, header {dims} needs {expected})") if len(data) < expected \
            else _("{path}: longer than its header says ({size} bytes, header {dims} needs {expected})")
        raise UserError(message.format(path=path, size=len(data), dims=dims, expected=expected), _(REPAIR_HINT))
    array = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)
    return torch.from_numpy(array.copy())


def read_idx(path: Path, ndim: int, original: tuple[str, int] | None = None) -> torch.Tensor:
    """Read and validate one IDX file (plain or .gz).

    `original` is (md5, size) of the decompressed original file. The checksum is
    checked when the file has the original's size (a smaller dataset in the same
    format is not the original). Digests of the decompressed bytes also hold for
    a re-compressed copy: Debian's .gz files differ from the upstream ones.
    """
    data = read_bytes(path)
    tensor = parse_idx(data, path, ndim)
    if original is not None and len(data) == original[1] and hashlib.md5(data).hexdigest() != original[0]:
        raise UserError(_("{path}: checksum does not match the original file").format(path=path), _(REPAIR_HINT))
    return tensor


def write_idx(path: Path, tensor: torch.Tensor) -> None:
    """Write a uint8 tensor as IDX (gzip when the name ends in .gz); used by tests and tools."""
    array = tensor.to(torch.uint8).numpy()
    header = bytes([0, 0, UBYTE, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    payload = header + array.tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
