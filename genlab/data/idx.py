"""Reader and writer for the IDX format of the MNIST files, with or without gzip."""

from __future__ import annotations

import gzip as gzip_codec
import os
import struct
import zlib
from pathlib import Path

import numpy as np

_GZIP_MAGIC = b"\x1f\x8b"
_HEADER = struct.Struct(">2sBB")

_CODE_TO_DTYPE: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_KIND_SIZE_TO_CODE = {(dt.kind, dt.itemsize): code for code, dt in _CODE_TO_DTYPE.items()}


class DataFileError(ValueError):
    """A data file is malformed or inconsistent; the message names the file."""


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Return the array stored in the IDX file at ``path`` (gzip detected by magic bytes), in native byte order."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip_codec.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise DataFileError(f"{path}: unreadable gzip stream ({err})") from err
    if len(raw) < _HEADER.size:
        raise DataFileError(f"{path}: truncated header ({len(raw)} bytes)")
    magic, code, ndim = _HEADER.unpack_from(raw)
    if magic != b"\x00\x00":
        raise DataFileError(f"{path}: not an IDX file (magic bytes {magic.hex()}, expected 0000)")
    if code not in _CODE_TO_DTYPE:
        raise DataFileError(f"{path}: unknown IDX dtype code 0x{code:02X}")
    dims_end = _HEADER.size + 4 * ndim
    if len(raw) < dims_end:
        raise DataFileError(f"{path}: truncated header, {ndim} dims announced but only {len(raw)} bytes")
    dims = struct.unpack_from(f">{ndim}I", raw, _HEADER.size)
    dtype = _CODE_TO_DTYPE[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    payload = len(raw) - dims_end
    if payload < expected:
        raise DataFileError(f"{path}: truncated data, dims {dims} need {expected} bytes but {payload} are present")
    if payload > expected:
        raise DataFileError(f"{path}: {payload - expected} bytes of trailing garbage after the data of dims {dims}")
    data = np.frombuffer(raw, dtype=dtype, offset=dims_end, count=expected // dtype.itemsize)
    return data.reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike[str], array: np.ndarray, gzip: bool = True) -> None:
    """Write ``array`` to ``path`` as IDX (gzip-compressed when ``gzip``); raise ValueError for dtypes IDX lacks."""
    array = np.asarray(array)
    code = _KIND_SIZE_TO_CODE.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        accepted = ", ".join(str(dt.newbyteorder("=")) for dt in _CODE_TO_DTYPE.values())
        raise ValueError(f"IDX cannot store dtype {array.dtype}; accepted: {accepted}")
    if array.ndim > 255:
        raise ValueError(f"IDX stores at most 255 dims, got {array.ndim}")
    header = _HEADER.pack(b"\x00\x00", code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    body = header + np.ascontiguousarray(array, dtype=_CODE_TO_DTYPE[code]).tobytes()
    Path(path).write_bytes(gzip_codec.compress(body, mtime=0) if gzip else body)
