"""Reproducible npz bytes: read back by np.load and zipfile, deflated by igzip, the same every time."""

import io
import struct
import zipfile
import zlib

import numpy as np
import pytest
from isal import isal_zlib

from multidigit import npz

ARRAYS = {
    "images": np.pad(np.full((3, 10, 10), 200, np.uint8), ((0, 0), (45, 45), (45, 45))),
    "boxes": np.arange(24, dtype=np.float32).reshape(3, 2, 4),
    "labels": np.full((3, 2), -1, np.int16),
    "none": np.zeros((0, 2)),
    "noise": np.random.default_rng(0).random(17),
    "fortran": np.asfortranarray(np.arange(12, dtype=np.int64).reshape(3, 4)),  # written in its own order
    "strided": np.arange(20, dtype=np.uint8)[::3],  # a view: written as the C-order copy
}


def test_arrays_come_back_from_np_load_and_the_bytes_never_change():
    data = npz.npz_bytes(ARRAYS)
    assert data == npz.npz_bytes({k: v.copy(order="K") for k, v in ARRAYS.items()})  # a view, or not
    with np.load(io.BytesIO(data)) as loaded:
        assert list(loaded.keys()) == list(ARRAYS)
        for name, array in ARRAYS.items():
            assert loaded[name].dtype == array.dtype and np.array_equal(loaded[name], array), name
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None  # every entry's CRC checks out
        infos = archive.infolist()
        assert [i.filename for i in infos] == [f"{name}.npy" for name in ARRAYS]
        fixed = ((1980, 1, 1, 0, 0, 0), zipfile.ZIP_DEFLATED)
        assert {(i.date_time, i.compress_type) for i in infos} == {fixed}


def test_each_entry_is_the_igzip_deflate_of_its_npy_bytes():
    data = npz.npz_bytes(ARRAYS)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info, array in zip(archive.infolist(), ARRAYS.values(), strict=True):
            start = info.header_offset + 30 + len(info.filename)  # 30-byte local header, the name, no extra
            assert struct.unpack("<I", data[info.header_offset : info.header_offset + 4])[0] == 0x04034B50
            npy = io.BytesIO()
            np.lib.format.write_array(npy, array, allow_pickle=False)
            whole = npy.getvalue()
            header = whole[: whole.index(b"\n") + 1]  # the .npy header ends at its newline
            packer = isal_zlib.compressobj(npz.LEVEL, isal_zlib.DEFLATED, -isal_zlib.MAX_WBITS, npz.MEM_LEVEL)
            expected = packer.compress(header) + packer.compress(whole[len(header) :]) + packer.flush()
            assert data[start : start + info.compress_size] == expected
            assert zlib.decompress(expected, -zlib.MAX_WBITS) == whole  # plain deflate: zlib reads it


def test_an_archive_past_the_32_bit_limit_is_refused_with_the_array_named(monkeypatch):
    monkeypatch.setattr(npz, "_LIMIT", 500)
    with pytest.raises(ValueError, match="array 'noise' takes the archive past 4 GiB"):
        npz.npz_bytes({"labels": ARRAYS["labels"], "noise": np.random.default_rng(1).random(100)})
