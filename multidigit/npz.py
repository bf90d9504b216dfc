"""Reproducible .npz bytes: each array an `.npy` entry of a zip archive, deflated with zlib's run-length
strategy (by zlib-ng), every timestamp fixed.

Why not np.savez_compressed: it stamps each entry with the current time (equal shards would differ) and
deflates with zlib's default strategy, the slowest part of writing a shard. Measured
(benchmarks/shard_codec.py, results/shard_codec.json): four stage-3 train shards' images, one process,
best of five, µs a canvas, and the share of the raw bytes (2026-12-06):

| codec | deflate | inflate (zlib) | size |
| --- | --- | --- | --- |
| zlib level 1, default strategy | 65.2 | 15.1 | 18.1% |
| zlib level 1, `Z_RLE` (matches at distance 1: runs of black) | 51.2 | 19.1 | 14.9% |
| **zlib-ng level 1, `Z_RLE`** (the same bytes as zlib's, SIMD kernels) | **16.2** | **19.7** | **14.9%** |
| libdeflate level 1 | 32.5 | 19.8 | 16.5% |
| ISA-L igzip level 1 (0 / 2 / 3 no better) | 7.9 | 14.6 | 17.3% |

Why not igzip, twice as fast: its bytes are not a function of the arrays alone. They depend on how the
input arrives (a 30 kB array fed as header, then data, deflated to other bytes than the two joined), and
on the CI host (2026-12-07) two runs of one stage, in-process and through Prefect workers, wrote equal
arrays as different bytes in 2 of 7 stage-1 shards, so the lock's hashes differed (it was the codec
from 2026-12-06 to 12-07). `Z_RLE` has one answer for given bytes: zlib-ng's output equals zlib's, byte
for byte, on every shard of the default pipeline and in tests/test_npz.py, whatever the CPU's kernels.
At ~10 µs a canvas the difference is under 2 s of a `dvc repro`.
It is plain deflate, so np.load, zipfile and any unzip read it with the standard zlib.
`zipfile` takes no strategy, so the archive is written here, after PKWARE's APPNOTE (4.3): a local header
and the data per entry, the central directory, the end record; no zip64 (a shard is a few MB).
"""

from __future__ import annotations

import io
import struct

import numpy as np
from zlib_ng import zlib_ng

LEVEL = 1  # with Z_RLE the level barely matters: 2 gave the same size and time
_VERSION = 20  # 2.0: deflate
_DEFLATE = 8
_DOS_TIME, _DOS_DATE = 0, (1 << 5) | 1  # 1980-01-01 00:00:00, the earliest a zip can say
_LIMIT = 0xFFFFFFFF  # sizes and offsets are 32-bit without zip64


def deflate(*chunks) -> bytes:
    """Raw deflate (no zlib header) of the chunks end to end at LEVEL with the run-length strategy, as a zip
    entry holds it (fed in pieces without a flush, deflate gives the bytes it gives the whole)."""
    packer = zlib_ng.compressobj(LEVEL, zlib_ng.DEFLATED, -zlib_ng.MAX_WBITS, 8, zlib_ng.Z_RLE)
    return b"".join([packer.compress(chunk) for chunk in chunks] + [packer.flush()])


def _npy_chunks(array: np.ndarray) -> tuple[bytes, np.ndarray | bytes]:
    """An `.npy` file as (header, data), the bytes np.lib.format.write_array writes; a C-contiguous array's
    data is its memory as bytes, not a copy (a stage-3 shard's images are ~5 MB)."""
    if not array.flags.c_contiguous or array.dtype.hasobject:  # write_array's other branches: let it write
        npy = io.BytesIO()
        np.lib.format.write_array(npy, array, allow_pickle=False)
        return npy.getvalue(), b""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(array))
    return header.getvalue(), array.reshape(-1).view(np.uint8)  # its bytes, uncopied


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """The .npz archive of `arrays` (entry `<name>.npy` each, in the dict's order), byte for byte the same
    for the same arrays.

    Raises:
        ValueError: an array or the archive past 4 GiB, which would need zip64.
    """
    parts, entries, at = [], [], 0  # the archive's pieces, joined once at the end
    for name, array in arrays.items():
        header, data = _npy_chunks(np.asarray(array))
        size = len(header) + len(data)
        packed = deflate(header, data)
        if max(size, at + len(packed)) > _LIMIT:
            raise ValueError(f"array {name!r} takes the archive past 4 GiB; write fewer canvases a shard")
        filename = f"{name}.npy".encode()
        crc = zlib_ng.crc32(data, zlib_ng.crc32(header))
        fields = (_VERSION, 0, _DEFLATE, _DOS_TIME, _DOS_DATE, crc, len(packed), size)
        entries.append((fields, filename, at))
        local = struct.pack("<IHHHHHIIIHH", 0x04034B50, *fields, len(filename), 0)
        parts += [local, filename, packed]
        at += len(local) + len(filename) + len(packed)
    start = at
    for fields, filename, offset in entries:  # version made by, the fields, no extra, comment or attributes
        row = (0x02014B50, _VERSION, *fields, len(filename), 0, 0, 0, 0, 0, offset)
        central = struct.pack("<IHHHHHHIIIHHHHHII", *row)
        parts += [central, filename]
        at += len(central) + len(filename)
    parts.append(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), at - start, start, 0))
    return b"".join(parts)
