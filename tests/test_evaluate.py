"""Stage evaluate (multidigit/evaluation/stage.py): metrics from detections, the figures; the real model
path and real `dvc repro` runs whose gates fail (test and drawn) are the slow tests at the end."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from multidigit.evaluation import matching as mt
from multidigit.evaluation import stage as evaluate
from multidigit.evaluation.drawn import BRUSH_BUCKETS
from scripts.smoke import make_workspace, workspace_env
from tests.conftest import ROOT, pipeline_env
from tests.test_coco import A, B, C, dets, ground_truth

D = (70.0, 5.0, 20.0, 20.0)


def split():
    """Four canvases holding 1, 2, 3 and 6 digits; canvas 2 has two overlapping boxes."""
    six = [(i, (i * 15.0, 75.0, 14.0, 20.0)) for i in range(6)]
    return ground_truth([[(3, A)], [(7, B), (2, C)], [(1, A), (4, (20.0, 20.0, 20.0, 20.0)), (5, D)], six])


def perfect(boxes, labels, score=0.9):
    out = []
    for b, lab in zip(boxes, labels, strict=True):
        keep = lab >= 0
        out.append({"boxes": b[keep], "scores": np.full(keep.sum(), score, np.float32), "labels": lab[keep]})
    return out


def at(detections, threshold):
    """What the page shows at `threshold` when every box is shown (the Keras path)."""
    return [mt.keep_above(d, threshold) for d in detections]


def test_perfect_detections_score_one_everywhere():
    boxes, labels = split()
    m = evaluate.score_split(boxes, labels, perfect(boxes, labels), perfect(boxes, labels), 0.9).metrics
    for key in (
        "metrics/mAP50",
        "metrics/mAP50-95",
        "metrics/AR100",
        "bucket/6-10/mAP50",
        "bucket/overlap/mAP50",
    ):
        assert m[key] == pytest.approx(1.0, abs=1e-9), key
    for key in ("f1/all", "precision/3", "recall/3", "count/accuracy", "canvas/accuracy", "iou/mean"):
        assert m[key] == 1.0, key
    assert m["operating/score_threshold"] == pytest.approx(0.9)
    assert (m["bucket/1/canvases"], m["bucket/2-5/canvases"], m["bucket/6-10/canvases"]) == (1.0, 2.0, 1.0)
    assert (m["bucket/overlap/canvases"], m["bucket/no-overlap/canvases"]) == (1.0, 3.0)
    assert m["confusion/missed"] == m["confusion/false_positives"] == m["confusion/misread"] == 0.0
    assert (m["data/test_canvases"], m["data/test_digits"]) == (4.0, 12.0)
    assert "ap/8" not in m  # no digit 8 in the split: COCO leaves the class out
    assert not [k for k in m if k.startswith("speed/")]  # timings live in benchmarks/inference.py


def test_threshold_comes_from_val_and_shapes_test_metrics():
    boxes, labels = split()
    # Val: a 0.4 false positive on top of perfect 0.9 hits: max F1 keeps only the hits -> threshold 0.9.
    val = perfect(boxes, labels)
    val[0] = dets((3, A, 0.9), (8, D, 0.4))
    threshold, val_f1 = evaluate.calibrate_threshold(boxes, labels, val)
    assert (threshold, val_f1) == (pytest.approx(0.9), 1.0)
    # Test: the same false positive at 0.5 is dropped by the val threshold, a true 0.6 digit too.
    test = perfect(boxes, labels)
    test[0] = dets((3, A, 0.6), (8, D, 0.5))
    m = evaluate.score_split(boxes, labels, test, at(test, threshold), threshold).metrics
    assert m["operating/score_threshold"] == pytest.approx(0.9)
    assert m["recall/3"] == 0.5 and m["recall/all"] == pytest.approx(11 / 12)  # one of two 3s lost
    assert m["confusion/missed"] == 1.0 and m["confusion/false_positives"] == 0.0
    assert m["canvas/accuracy"] == 0.75 and m["bucket/1/canvas_accuracy"] == 0.0
    # COCO mAP ignores the threshold: class 8 has no ground truth, class 3's only digit is found.
    assert m["metrics/mAP50"] == pytest.approx(1.0, abs=1e-9)


def test_user_facing_figures_count_only_shown_boxes_while_map_sees_every_candidate():
    """A second class on a found digit (the page hides it: shown 0) costs COCO nothing it does not cost
    on the candidates, and costs the page's precision, count and confusion only when it is shown."""
    boxes, labels = split()
    page = perfect(boxes, labels)
    page[0] = dets((3, A, 0.9), (8, A, 0.8))  # an 8 on the 3, below it in score
    page[0]["shown"] = np.array([True, False])
    for d in page[1:]:
        d["shown"] = np.ones(len(d["scores"]), bool)
    hidden = evaluate.score_split(boxes, labels, page, page, 0.5).metrics
    assert (hidden["precision/all"], hidden["count/accuracy"], hidden["canvas/accuracy"]) == (1.0, 1.0, 1.0)
    assert hidden["confusion/false_positives"] == 0.0
    page[0]["shown"] = np.array([True, True])
    listed = evaluate.score_split(boxes, labels, page, page, 0.5).metrics
    assert listed["precision/all"] == pytest.approx(12 / 13) and listed["count/accuracy"] == 0.75
    assert listed["confusion/false_positives"] == 1.0 and listed["canvas/accuracy"] == 0.75
    # mAP is computed on the candidates, shown or not: the same both times.
    assert hidden["metrics/mAP50"] == listed["metrics/mAP50"]
    # The val sweep also runs on what the page would show: a hidden box never lowers the operating F1.
    page[0]["shown"] = np.array([True, False])
    assert evaluate.calibrate_threshold(boxes, labels, page)[1] == 1.0


def test_figures_and_curve_csvs(tmp_path):
    boxes, labels = split()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (len(labels), 100, 100), dtype=np.uint8)
    test = perfect(boxes, labels)
    test[1] = dets((7, B, 0.8), (9, D, 0.7))  # misses the 2 at C, one false positive
    threshold, _ = evaluate.calibrate_threshold(boxes, labels, test)
    assert threshold == pytest.approx(0.8)  # 0.7 adds only the false positive
    shown = at(test, threshold)
    ev = evaluate.score_split(boxes, labels, test, shown, threshold)
    out = tmp_path / "plots" / "stage2"
    out.mkdir(parents=True)
    canvases = SimpleNamespace(images=images, boxes=boxes, labels=labels)
    evaluate.write_figures(ev, canvases, shown, out, "stage2", gallery_size=3)
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "confusion.png", "f1_confidence.csv", "f1_confidence.png", "gallery.png", "pr_curve.csv",
        "pr_curves.png", "worst.png",
    ]  # fmt: skip
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000, png.name
    rows = (out / "f1_confidence.csv").read_text().splitlines()
    assert rows[0] == "threshold,precision,recall,f1" and len(rows) == 102
    at_80 = rows[1 + 80].split(",")
    assert float(at_80[3]) == pytest.approx(ev.metrics["f1/all"], abs=1e-5)
    assert (out / "pr_curve.csv").read_text().splitlines()[0] == "recall,precision"


def test_metrics_are_written_rounded_and_json_clean():
    boxes, labels = split()
    ev = evaluate.score_split(boxes, labels, perfect(boxes, labels), perfect(boxes, labels), 0.9)
    rounded = {k: round(float(v), evaluate.DECIMALS) for k, v in ev.metrics.items()}
    text = json.dumps(rounded, allow_nan=False)  # no NaN may reach DVC
    assert all(isinstance(v, float) for v in json.loads(text).values())


# ---------------------------------------------------------------- the real model path (slow)
IMPOSSIBLE_GATE = {"map50": 1.0, "map50_95": 0.0}


@pytest.fixture(scope="module")
def eval_inputs(tmp_path_factory, mnist_splits):
    """A folder holding what evaluate@stage1 and evaluate@stage3 read, at repo-relative paths: an
    untrained detector and 40 val + 40 test real canvases per stage, and 24 drawn canvases for stage 3
    (the generator's own drawn split: re-stroked MNIST test digits, strokes and brush stored)."""
    from multidigit import canvas
    from multidigit.mnist import read_split
    from multidigit.model import build_detector
    from multidigit.params import load_params

    root = tmp_path_factory.mktemp("eval_inputs")
    cfg = load_params(ROOT / "params.yaml")
    digits, labels = read_split("test", mnist_splits)
    detector = build_detector(cfg.model)
    for stage in ("stage1", "stage3"):
        for split in ("val", "test"):
            seed = canvas.shard_seed(cfg.seed, stage, split, 0)
            shard = canvas.make_shard(digits, labels, 40, cfg.generate, cfg.generate.stages[stage], seed)
            canvas.save_shard(root / f"data/canvases/{stage}/{split}/shard-00000.npz", shard)
        if stage == "stage3":
            seed = canvas.shard_seed(cfg.seed, stage, "drawn", 0)
            shard = canvas.make_drawn_shard(digits, labels, 24, cfg.generate, stage, seed)
            canvas.save_shard(root / f"data/canvases/{stage}/drawn/shard-00000.npz", shard)
        (root / "models" / stage).mkdir(parents=True)
        detector.save(root / "models" / stage / "detector.keras")
    return root


@pytest.mark.slow
def test_stage_runs_the_real_model_writes_outputs_and_fails_its_gate(
    eval_inputs, tmp_path, monkeypatch, params_dict
):
    import mlflow

    from multidigit.params import validate_params

    shutil.copytree(eval_inputs, tmp_path, dirs_exist_ok=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MULTIDIGIT_PIPELINE_RUN_ID", raising=False)
    params_dict["evaluate"]["gates"]["stage1"] = IMPOSSIBLE_GATE
    metrics, failure = evaluate.run_stage(validate_params(params_dict), "stage1")
    written = json.loads((tmp_path / "metrics/stage1.json").read_text())
    assert written == metrics
    assert failure is not None and failure.startswith("gate failed: stage1 map50 ")
    assert failure.endswith(" < 1.000") and "\n" not in failure
    assert metrics["data/test_canvases"] == 40.0 and 0 < metrics["operating/score_threshold"] <= 1
    # Model quality only: no timing and no drawn split outside stage 3.
    assert not [k for k in metrics if k.startswith(("speed/", "drawn/", "drawn_page/"))]
    assert len(list((tmp_path / "plots/stage1").glob("*.png"))) == 5
    runs = mlflow.search_runs(filter_string="attributes.run_name = 'evaluate@stage1'", output_format="list")
    assert [r.data.tags["gate"] for r in runs] == ["failed"]
    assert runs[0].data.metrics["metrics/mAP50"] == metrics["metrics/mAP50"]
    artifacts = mlflow.MlflowClient().list_artifacts(runs[0].info.run_id, "plots")
    assert "plots/confusion.png" in [a.path for a in artifacts]


def repro_below_gate(eval_inputs, tmp_path, mnist_dir, gate: dict) -> tuple[object, str, object]:
    """`dvc repro --downstream evaluate@stage3` (the real DVC stage and Prefect flow) in a fresh workspace
    whose stage-3 gate is `gate` and which already serves a champion; returns (repo, output, lock)."""
    repo = make_workspace(tmp_path / "repo")
    (repo / "dvc.lock").unlink(missing_ok=True)  # the checkout's lock records its own passing run
    shutil.copytree(eval_inputs, repo, dirs_exist_ok=True)
    champion = repo / "models" / "tfjs"
    (champion / "v-previous").mkdir(parents=True)
    (champion / "v-previous" / "manifest.json").write_text('{"version": "v-previous"}')
    (champion / "champion.json").write_text('{"version": "v-previous"}')
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["evaluate"]["gates"]["stage3"] = gate
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # Prefect's ephemeral server gets 20 s to start by default: too little on a loaded shared machine.
    env = (
        workspace_env()
        | pipeline_env(mnist_dir)
        | {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}
    )
    # --downstream: evaluate@stage3 and what depends on it (export); the inputs above stand in for
    # generate@stage3 and train@stage3.
    run = subprocess.run(
        ["dvc", "repro", "--downstream", "evaluate@stage3"], cwd=repo, env=env, capture_output=True, text=True
    )
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-3000:]
    lock = repo / "dvc.lock"
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}) if lock.exists() else {}
    assert "evaluate@stage3" not in stages and "export" not in stages
    assert "export" in yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]  # it exists, yet did not run
    # Nothing exported: the champion and its folder are as they were, no version beside them.
    assert sorted(p.name for p in champion.iterdir()) == ["champion.json", "v-previous"]
    assert (champion / "champion.json").read_text() == '{"version": "v-previous"}'
    return repo, output, stages


@pytest.mark.slow
def test_dvc_repro_below_the_gate_fails_with_one_line_and_export_never_runs(eval_inputs, tmp_path, mnist_dir):
    """Under an impossible stage-3 test gate: non-zero exit, the gate line, metrics written for a person
    to read, no dvc.lock entry, export not run and the champion unchanged."""
    repo, output, _ = repro_below_gate(eval_inputs, tmp_path, mnist_dir, IMPOSSIBLE_GATE)
    gate_line = re.compile(r"gate failed: stage3 map50 \d\.\d{3} < 1\.000$")
    assert any(gate_line.search(line) for line in output.splitlines()), output[-3000:]
    assert json.loads((repo / "metrics/stage3.json").read_text())["metrics/mAP50"] < 1.0


@pytest.mark.slow
def test_the_drawn_gate_alone_blocks_export_and_the_champion_stays(eval_inputs, tmp_path, mnist_dir):
    """The test-split gate passes (0 / 0); only the drawn gate is out of reach. evaluate@stage3 scores
    the drawn split, writes its figures, fails on the drawn gate alone; nothing is exported and the
    champion stays."""
    gate = {"map50": 0.0, "map50_95": 0.0, "drawn": {"map50": 1.0, "sequence_accuracy": 1.0}}
    repo, output, _ = repro_below_gate(eval_inputs, tmp_path, mnist_dir, gate)
    expected = (
        r"gate failed: stage3 drawn map50 \d\.\d{3} < 1\.000, drawn sequence_accuracy \d\.\d{3} < 1\.000$"
    )
    assert any(re.search(expected, line) for line in output.splitlines()), output[-3000:]
    assert "gate failed: stage3 map50" not in output  # the test split met its gate
    metrics = json.loads((repo / "metrics/stage3.json").read_text())
    assert metrics["drawn/canvases"] == 24.0 and 0 <= metrics["drawn/sequence_accuracy"] < 1
    assert (
        sum(
            metrics[f"drawn/{name}/canvases"]
            for name, _, _ in BRUSH_BUCKETS
            if f"drawn/{name}/canvases" in metrics
        )
        == 24
    )
    assert (repo / "plots/stage3/drawn_worst.png").stat().st_size > 5000
    # and as the page reads the strokes (read_brush, the second look): what it lists, so no mAP
    page = {k.removeprefix("drawn_page/"): v for k, v in metrics.items() if k.startswith("drawn_page/")}
    assert page["canvases"] == 24.0 and 0 <= page["sequence_accuracy"] <= 1 and "mAP50" not in page
    assert {"recall", "precision", "count_accuracy", "canvas_accuracy"} <= set(page)
