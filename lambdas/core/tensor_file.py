"""The safetensors container, read and written with numpy alone (no torch, no pickle, no safetensors
package): what a gallery file (``gallery.py``) is made of.

The layout is the standard one (the package reads it: tests/test_gallery.py): u64 header length, a JSON
header (each tensor's dtype, shape and byte offsets, and a ``__metadata__`` table of strings) padded with
spaces to 8 bytes, then the tensors back to back. Reading gives zero-copy, read-only views of the
buffer, each tensor's entry checked; lists of strings are stored as one U8 tensor, joined by NUL.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np

MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header
DTYPES = {"F32": np.dtype("<f4"), "I32": np.dtype("<i4"), "U8": np.dtype("u1")}
TEXT_SEP = "\0"  # between the strings of a text tensor (no name, file or folder name holds one)


def is_safetensors(data: bytes) -> bool:
    """Told by the first bytes: a plausible header length, then a JSON object."""
    if len(data) < 10:
        return False
    (n,) = struct.unpack_from("<Q", data)
    return 2 <= n <= min(MAX_HEADER, len(data) - 8) and data[8:9] == b"{"


def read_header(data: bytes) -> tuple[Any, memoryview]:
    """(the parsed JSON header, the tensors' bytes) of a file ``is_safetensors`` accepts; ValueError
    (UnicodeDecodeError among them) on a damaged header."""
    (n,) = struct.unpack_from("<Q", data)
    return json.loads(data[8 : 8 + n]), memoryview(data)[8 + n :]


def write(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """A safetensors file, written here rather than by ``safetensors.numpy.save``, whose header lists
    ``__metadata__`` in hash order (different bytes at every save of the same gallery): these bytes are
    a function of the tensors and metadata (sorted keys, tensors in name order), so a gallery's
    ``digest()`` and bootstrap's md5 comparison hold across saves."""
    names = {dt: code for code, dt in DTYPES.items()}
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name in sorted(tensors):
        arr = tensors[name]
        header[name] = {"dtype": names[arr.dtype], "shape": list(arr.shape), "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    text = json.dumps(header, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()
    text += b" " * (-len(text) % 8)
    return b"".join([struct.pack("<Q", len(text)), text, *(tensors[n].reshape(-1).view(np.uint8) for n in sorted(tensors))])


def tensor(header: dict, body: memoryview, name: str, dtype: str, ndim: int) -> np.ndarray:
    """A read-only view of tensor ``name`` in the safetensors ``body`` (no copy), its entry checked."""
    spec = header[name]
    if not isinstance(spec, dict) or spec.get("dtype") != dtype:
        raise ValueError(f"tensor {name!r} is not {dtype}")
    shape, offsets = spec.get("shape"), spec.get("data_offsets")
    if (
        not isinstance(shape, list) or len(shape) != ndim or not all(isinstance(s, int) and s >= 0 for s in shape)
        or not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
    ):
        raise ValueError(f"tensor {name!r} has a bad shape or offsets")
    start, end = offsets
    np_dtype = DTYPES[dtype]
    if not 0 <= start <= end <= len(body) or end - start != math.prod(shape) * np_dtype.itemsize:
        raise ValueError(f"tensor {name!r} lies outside the file (truncated?)")
    return np.frombuffer(body, dtype=np_dtype, count=math.prod(shape), offset=start).reshape(shape)


def text_tensor(values: list[str]) -> np.ndarray:
    """``values`` as one U8 tensor: UTF-8, joined by ``TEXT_SEP``."""
    return np.frombuffer(TEXT_SEP.join(values).encode(), dtype=np.uint8)


def texts(blob: np.ndarray, count: int, what: str) -> list[str]:
    """The ``count`` strings of a tensor written by ``text_tensor``."""
    if count == 0:
        if blob.size:
            raise ValueError(f"{what}: text for no entries")
        return []
    values = blob.tobytes().decode().split(TEXT_SEP)
    if len(values) != count:
        raise ValueError(f"{what}: {len(values)} entries, expected {count}")
    return values
