"""multidigit/registry.py on a temporary MLflow sqlite store: the champion rule, promote, rollback, list.

Version folders are written with real manifests (sha256 of every file, the SavedModel folder's too) but
tiny placeholder files: the
registry handles an exported folder as files + manifest, whatever the weights are (conversion itself is
covered in test_export.py and test_browser_parity.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from multidigit import cli, registry
from multidigit.atomic import save_json
from multidigit.manifest import build_manifest, verify_model_dir
from multidigit.params import Params, validate_params

pytestmark = pytest.mark.slow  # MLflow's sqlite store takes ~15 s to create


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture()
def workspace(store, tmp_path, monkeypatch, params_dict, request) -> tuple[Params, Path]:
    """Params on the shared temp store (one registered model per test), cwd in a fresh folder."""
    for var in ("MLFLOW_TRACKING_URI", "MULTIDIGIT_PIPELINE_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    params_dict["mlflow"] = {
        "tracking_uri": f"sqlite:///{store}/mlflow.db",
        "experiment": "registry-tests",
        "registered_model": f"detector-{request.node.name}"[:60],
    }
    (tmp_path / "params.yaml").write_text(json.dumps(params_dict))
    (tmp_path / "detector.keras").write_bytes(b"keras placeholder")
    return validate_params(params_dict), tmp_path / "models" / "tfjs"


def make_version(models_dir: Path, name: str, map50_95: float, weights: str | None = None) -> Path:
    """A version folder with a real manifest whose artifact mAP is `map50_95` (weights: Keras sha256)."""
    folder = models_dir / name
    folder.mkdir(parents=True)
    (folder / "model.json").write_text(json.dumps({"format": "graph-model", "version": name}))
    (folder / "group1-shard1of1.bin").write_bytes(np.random.default_rng(len(name)).bytes(256))
    (folder / "saved_model" / "variables").mkdir(parents=True)  # the SavedModel /api/detect serves
    (folder / "saved_model" / "saved_model.pb").write_bytes(b"graph of " + name.encode())
    (folder / "saved_model" / "variables" / "variables.index").write_bytes(np.random.default_rng(1).bytes(64))
    manifest = build_manifest(
        folder,
        version=name,
        grid={"stride": 4, "size": 25, "boxes_per_cell": 1, "slots": 625},
        thresholds={"score": 0.5, "score_source": "test", "iou": 0.45, "max_detections": 20},
        metrics={"metrics/mAP50-95": map50_95},
        quantization={"dtype": "uint8", "map50_95_tfjs": map50_95},
        source={"keras": "detector.keras", "sha256": weights or f"sha-of-{name}"},
    )
    save_json(folder / "manifest.json", manifest)
    return folder


def register(cfg: Params, models_dir: Path, name: str, map50_95: float, gate: bool = True, weights=None):
    folder = make_version(models_dir, name, map50_95, weights)
    return registry.register_export(cfg, folder, Path("detector.keras"), gate_passed=gate)


def served(models_dir: Path) -> str:
    return json.loads((models_dir / "champion.json").read_text())["version"]


def test_a_worse_model_does_not_take_champion(workspace):
    cfg, models = workspace
    _, promoted, _ = register(cfg, models, "v-a", 0.80)
    assert promoted and served(models) == "v-a"
    _, promoted, reason = register(cfg, models, "v-b", 0.70)
    assert not promoted and "0.7000 < champion v1 0.8000" in reason
    assert served(models) == "v-a"
    _, promoted, reason = register(cfg, models, "v-c", 0.95, gate=False)
    assert not promoted and "did not pass its gate" in reason and served(models) == "v-a"
    with pytest.raises(ValueError, match=r"not promoted: v2 mAP50-95 0\.7000 < champion v1"):
        registry.promote(cfg, "v-b", models)
    client = registry._client(cfg.mlflow)
    assert registry.champion(client, cfg.mlflow.registered_model).version == "v-a"
    assert served(models) == "v-a"
    _, promoted, _ = register(cfg, models, "v-d", 0.80)  # ties win: newer weights, same quality
    assert promoted and served(models) == "v-d"


def test_a_person_may_over_rule_the_rule_with_a_reason_but_not_the_gate(workspace, capsys):
    cfg, models = workspace
    register(cfg, models, "v-a", 0.80)
    register(cfg, models, "v-b", 0.79)
    register(cfg, models, "v-c", 0.95, gate=False)
    with pytest.raises(ValueError, match="did not pass its gate"):
        registry.promote(cfg, "v-c", models, reason="reads drawings better")
    assert registry.promote(cfg, "v-b", models, reason="reads fonts better").version == "v-b"
    assert served(models) == "v-b"
    assert "0.7900 < champion v1 0.8000, over-ruled: reads fonts better" in capsys.readouterr().out
    client = registry._client(cfg.mlflow)
    tags = client.get_model_version(cfg.mlflow.registered_model, "2").tags
    assert tags["promoted_over_rule"] == "reads fonts better"
    assert registry.rollback(cfg, models).version == "v-a" and served(models) == "v-a"


def test_rollback_restores_the_previous_champion(workspace):
    cfg, models = workspace
    register(cfg, models, "v-old", 0.80)
    register(cfg, models, "v-new", 0.85)
    assert served(models) == "v-new"
    original = verify_model_dir(models / "v-old")["files"]
    shutil.rmtree(models / "v-old")  # the local copy is gone: rollback fetches it from MLflow
    entry = registry.rollback(cfg, models)
    assert entry.version == "v-old" and served(models) == "v-old"
    assert verify_model_dir(models / "v-old")["files"] == original
    assert "saved_model/variables/variables.index" in original  # nested SavedModel files come back too
    client = registry._client(cfg.mlflow)
    name = cfg.mlflow.registered_model
    assert registry.champion(client, name).version == "v-old"
    assert client.get_model_version(name, "2").tags["rolled_back"] == "true"
    with pytest.raises(ValueError, match=r"no previous champion to roll back to \(history: \[1\]\)"):
        registry.rollback(cfg, models)
    # `dvc repro` re-exports the rolled-back weights: registered, but champion stays where it was put
    _, promoted, reason = register(cfg, models, "v-again", 0.85, weights="sha-of-v-new")
    assert not promoted and "rolled back before" in reason and served(models) == "v-old"
    assert registry.promote(cfg, "v-again", models).version == "v-again"  # a person still may
    assert served(models) == "v-again"


def test_list_and_cli_show_the_champion(workspace, capsys):
    cfg, models = workspace
    register(cfg, models, "v-x", 0.6)
    register(cfg, models, "v-y", 0.5)
    rows = registry.list_versions(cfg)
    assert [(r["number"], r["version"], r["aliases"]) for r in rows] == [
        (2, "v-y", ""),
        (1, "v-x", "champion"),
    ]
    assert cli.main(["registry", "list", "--params", "params.yaml"]) == 0
    assert "v-x" in capsys.readouterr().out
    assert cli.main(["registry", "promote", "--version", "v-nope", "--params", "params.yaml"]) == 1
    assert "--version 'v-nope' not registered; known: 1 (v-x), 2 (v-y)" in capsys.readouterr().err
