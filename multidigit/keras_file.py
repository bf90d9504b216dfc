"""Reproducible .keras bytes: the same model saved twice gives the same file, so a rerun that trains the
same weights leaves DVC's hash alone and the stages after it are skipped rather than rerun.

Keras 3 stamps three things into the archive that change with every save while the model does not:
metadata.json's `date_saved`, the zip time of model.weights.h5, and config.json's `shared_object_id`s,
which are Python id()s of the shared objects. The weights file itself repeats byte for byte (checked on
every stage of the pipeline, 2026-12-06). So Keras writes the file and it is rewritten here: the date
fixed, the ids renumbered in the order they first appear (loading only pairs equal ids), every entry dated
1980-01-01 and stored as Keras stored it.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

from multidigit.atomic import atomic_path

EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can say, as the shard archives use
SAVED = "1980-01-01@00:00:00"  # Keras's own format for date_saved
_SHARED_ID = re.compile(rb'"shared_object_id": (\d+)')


def _renumber(config: bytes) -> bytes:
    """config.json with its shared-object ids replaced by 1, 2, ... in order of first appearance."""
    ids: dict[bytes, int] = {}
    return _SHARED_ID.sub(lambda m: b'"shared_object_id": %d' % ids.setdefault(m[1], len(ids) + 1), config)


def _steady(name: str, data: bytes) -> bytes:
    if name == "metadata.json":
        return json.dumps({**json.loads(data), "date_saved": SAVED}).encode()
    return _renumber(data) if name == "config.json" else data


def steady_archive(raw: bytes) -> bytes:
    """The .keras archive `raw` with its save date, entry times and shared-object ids made fixed."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            entry = zipfile.ZipInfo(info.filename, date_time=EPOCH)
            entry.compress_type, entry.external_attr = info.compress_type, info.external_attr
            dst.writestr(entry, _steady(info.filename, src.read(info)))
    return out.getvalue()


def save_keras(model, path: str | Path) -> None:
    """`model.save` to `path` atomically, with bytes that depend on the model alone."""
    with atomic_path(path) as tmp:
        model.save(tmp)
        tmp.write_bytes(steady_archive(tmp.read_bytes()))
