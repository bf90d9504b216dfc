"""multidigit/dataset_export.py: YOLO and COCO exports of generated canvases round-trip exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from multidigit import canvas, dataset_export
from multidigit.params import validate_params
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, mnist_splits):
    """A folder holding params.yaml and data/canvases/stage3 with 30 train and 15 test canvases."""
    root = tmp_path_factory.mktemp("export")
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["generate"]["shard_size"] = 20
    data["generate"]["stages"]["stage3"]["canvases"] = {"train": 30, "val": 15, "test": 15}
    validate_params(data)
    (root / "params.yaml").write_text(yaml.safe_dump(data))
    canvas.main(root / "params.yaml", "stage3", out_root=root / "data" / "canvases", mnist_dir=mnist_splits)
    return root


def assert_same(a: canvas.Canvases, b: canvas.Canvases) -> None:
    assert a.images.tobytes() == b.images.tobytes()
    assert a.labels.dtype == b.labels.dtype and np.array_equal(a.labels, b.labels)
    assert a.boxes.dtype == b.boxes.dtype and a.boxes.tobytes() == b.boxes.tobytes()


@pytest.mark.parametrize("fmt", ["yolo", "coco"])
def test_round_trip_is_exact(workspace, tmp_path, fmt):
    data = canvas.read_canvases("stage3", "train", workspace / "data" / "canvases")
    assert (data.labels >= 0).sum(axis=1).max() > 1  # several digits, some overlapping, really exported
    dataset_export.export_dataset(data, fmt, "train", tmp_path)
    reader = dataset_export.read_yolo if fmt == "yolo" else dataset_export.read_coco
    assert_same(reader(tmp_path, "train", max_digits=data.labels.shape[1]), data)


def test_yolo_layout_and_normalised_lines(workspace, tmp_path):
    data = canvas.read_canvases("stage3", "test", workspace / "data" / "canvases")
    dataset_export.export_dataset(data, "yolo", "test", tmp_path)
    dataset_export.export_dataset(data, "yolo", "val", tmp_path)  # a second split joins data.yaml
    spec = yaml.safe_load((tmp_path / "data.yaml").read_text())
    assert spec["nc"] == 10 and spec["names"][3] == "3"
    assert spec["test"] == "images/test" and spec["val"] == "images/val"
    assert len(list((tmp_path / "images" / "test").glob("*.png"))) == len(data) == 15
    first = (tmp_path / "labels" / "test" / "canvas-000000.txt").read_text().splitlines()
    x, y, w, h = data.boxes[0, 0]
    assert first[0].split() == [
        str(data.labels[0, 0]),
        f"{(x + w / 2) / 100:.6f}",
        f"{(y + h / 2) / 100:.6f}",
        f"{w / 100:.6f}",
        f"{h / 100:.6f}",
    ]
    assert len(first) == int((data.labels[0] >= 0).sum())


def test_coco_json_loads_in_pycocotools(workspace, tmp_path):
    from pycocotools.coco import COCO

    data = canvas.read_canvases("stage3", "test", workspace / "data" / "canvases")
    dataset_export.export_dataset(data, "coco", "test", tmp_path)
    coco = COCO(str(tmp_path / "annotations" / "test.json"))
    assert len(coco.getImgIds()) == 15
    assert len(coco.getAnnIds()) == int((data.labels >= 0).sum())
    assert coco.loadImgs(1)[0]["file_name"] == "test/canvas-000000.png"
    assert (tmp_path / "images" / "test" / "canvas-000000.png").exists()


def test_cli_main_exports_from_data_canvases(workspace, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(workspace)
    dataset_export.main("params.yaml", "stage3", "coco", "test", tmp_path / "coco")
    assert "15 stage3/test canvases as coco" in capsys.readouterr().out
    coco = json.loads((tmp_path / "coco" / "annotations" / "test.json").read_text())
    assert [c["id"] for c in coco["categories"]] == list(range(10))


def test_bad_format_and_missing_files_are_named(workspace, tmp_path):
    data = canvas.read_canvases("stage3", "test", workspace / "data" / "canvases")
    with pytest.raises(ValueError, match="format: 'voc'"):
        dataset_export.export_dataset(data, "voc", "test", tmp_path)
    with pytest.raises(FileNotFoundError, match="no YOLO label files"):
        dataset_export.read_yolo(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="no COCO annotations"):
        dataset_export.read_coco(tmp_path, "test")
