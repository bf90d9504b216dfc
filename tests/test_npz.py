"""Reproducible npz bytes: read back by np.load and zipfile, run-length deflated, the same every time."""

import io
import struct
import zipfile
import zlib

import numpy as np
import pytest

from multidigit import npz

ARRAYS = {
    "images": np.pad(np.full((3, 10, 10), 200, np.uint8), ((0, 0), (45, 45), (45, 45))),
    "boxes": np.arange(24, dtype=np.float32).reshape(3, 2, 4),
    "labels": np.full((3, 2), -1, np.int16),
    "none": np.zeros((0, 2)),
    "noise": np.random.default_rng(0).random(17),
    "fortran": np.asfortranarray(np.arange(12, dtype=np.int64).reshape(3, 4)),  # written in its own order
    "strided": np.arange(20, dtype=np.uint8)[::3],  # a view: written as the C-order copy
    # past deflate's 32 kB window and several blocks: sparse strokes on black, as a shard's images are
    "canvases": (np.random.default_rng(2).random((60, 100, 100)) > 0.93).astype(np.uint8) * 255,
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


def test_each_entry_is_zlibs_run_length_deflate_of_its_npy_bytes():
    # The standard zlib is the reference: its Z_RLE has one output for given bytes, so a shard's bytes are
    # a function of its arrays alone, whatever kernels zlib-ng picks on this CPU or how the input arrives
    data = npz.npz_bytes(ARRAYS)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info, array in zip(archive.infolist(), ARRAYS.values(), strict=True):
            start = info.header_offset + 30 + len(info.filename)  # 30-byte local header, the name, no extra
            assert struct.unpack("<I", data[info.header_offset : info.header_offset + 4])[0] == 0x04034B50
            npy = io.BytesIO()
            np.lib.format.write_array(npy, array, allow_pickle=False)
            whole = npy.getvalue()
            packer = zlib.compressobj(npz.LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS, 8, zlib.Z_RLE)
            assert data[start : start + info.compress_size] == packer.compress(whole) + packer.flush()
            pieces = [whole[at : at + 7919] for at in range(0, len(whole), 7919)]  # any split, same bytes
            assert npz.deflate(*pieces) == data[start : start + info.compress_size], info.filename


def test_an_archive_past_the_32_bit_limit_is_refused_with_the_array_named(monkeypatch):
    monkeypatch.setattr(npz, "_LIMIT", 500)
    with pytest.raises(ValueError, match="array 'noise' takes the archive past 4 GiB"):
        npz.npz_bytes({"labels": ARRAYS["labels"], "noise": np.random.default_rng(1).random(100)})
