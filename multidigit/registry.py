"""The MLflow model registry of exported versions: register, promote by the champion rule, roll back.

Every export registers one model version of `mlflow.registered_model` whose run holds the Keras
detector (`keras/`) and the TF.js folder (`tfjs/<version>/`). The alias `champion` names the served
version; `models/tfjs/champion.json` mirrors it for the Flask service. The rule:

    a version takes `champion` only if its gate passed and its mAP@.5:.95 (measured on the exported
    TF.js artifact, quantization included) is at least the current champion's; otherwise the old
    champion stays served.

Every promotion appends to a history kept as a registered-model tag, so `rollback` gives `champion` back
to the version that held it before (its files are downloaded from MLflow again if the local copy is
gone, and verified against their manifest). Weights that were rolled back never take `champion` again
automatically (a later export of the same detector.keras is registered, not promoted); `promote` can.
`promote --reason` over-rules the rule for a version that passed its gate, and keeps the reason on it.

    multidigit registry list | promote [--version V] [--reason TEXT] | rollback
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multidigit.atomic import atomic_path, save_json
from multidigit.constants import DEFAULT_PARAMS_FILE, TFJS_DIR
from multidigit.manifest import verify_model_dir
from multidigit.params import MlflowParams, Params, load_params
from multidigit.tracking import stage_run, tracking_uri

ALIAS = "champion"
HISTORY_TAG = "multidigit.champion_history"  # JSON list of registry versions that held champion, oldest first
CHAMPION_FILE = "champion.json"
ACTIONS = ("list", "promote", "rollback")


@dataclass(frozen=True)
class Entry:
    """One registered version as the promotion rule sees it."""

    number: int  # MLflow model version
    version: str  # the TF.js folder name under models/tfjs/
    map50_95: float  # mAP@.5:.95 of the exported artifact on the test split
    gate_passed: bool
    run_id: str


def _client(params: MlflowParams):
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(params))
    return mlflow.MlflowClient()


def _entry(mv: Any) -> Entry:
    tags = mv.tags
    return Entry(
        number=int(mv.version),
        version=tags.get("tfjs_version", ""),
        map50_95=float(tags.get("map50_95", "nan")),
        gate_passed=tags.get("gate_passed") == "true",
        run_id=mv.run_id,
    )


def _history(client: Any, name: str) -> list[int]:
    return [int(v) for v in json.loads(client.get_registered_model(name).tags.get(HISTORY_TAG, "[]"))]


def champion(client: Any, name: str) -> Entry | None:
    """The version holding the `champion` alias, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return _entry(client.get_model_version_by_alias(name, ALIAS))
    except MlflowException:
        return None


def promotion_decision(candidate: Entry, current: Entry | None) -> tuple[bool, str]:
    """The champion rule: (promote?, one-line reason)."""
    if not candidate.gate_passed:
        return False, f"v{candidate.number} did not pass its gate"
    if current is None:
        return True, f"v{candidate.number} is the first champion"
    better = candidate.map50_95 >= current.map50_95
    relation = ">=" if better else "<"
    return better, (
        f"v{candidate.number} mAP50-95 {candidate.map50_95:.4f} {relation} "
        f"champion v{current.number} {current.map50_95:.4f}"
    )


# ---------------------------------------------------------------- local files
def ensure_local(entry: Entry, models_dir: Path) -> Path:
    """The version's folder under `models_dir`, downloaded from its MLflow run when missing; verified."""
    import mlflow

    folder = Path(models_dir) / entry.version
    if not folder.is_dir():
        with atomic_path(folder, is_dir=True) as tmp:
            got = mlflow.artifacts.download_artifacts(
                run_id=entry.run_id, artifact_path=f"tfjs/{entry.version}", dst_path=str(tmp / "dl")
            )
            for path in Path(got).iterdir():
                shutil.move(str(path), tmp / path.name)
            shutil.rmtree(tmp / "dl")
    verify_model_dir(folder)
    return folder


def write_champion(models_dir: Path, entry: Entry, name: str) -> Path:
    """models/tfjs/champion.json naming the served version (read by services/models.py)."""
    path = Path(models_dir) / CHAMPION_FILE
    save_json(
        path,
        {
            "version": entry.version,
            "registry_version": entry.number,
            "registered_model": name,
            "map50_95": entry.map50_95,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    return path


def _set_champion(client: Any, name: str, entry: Entry, history: list[int], models_dir: Path) -> None:
    """Point alias, history tag and champion.json at `entry` (files first, so the page never 404s)."""
    ensure_local(entry, models_dir)
    client.set_registered_model_alias(name, ALIAS, str(entry.number))
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    write_champion(models_dir, entry, name)


# ---------------------------------------------------------------- actions
def register_export(
    cfg: Params, folder: Path, keras_path: Path, *, gate_passed: bool, models_dir: Path | None = None
) -> tuple[Entry, bool, str]:
    """Register an exported folder as a new model version and promote it if the rule allows.

    Args:
        cfg: all params (the mlflow block names the store and the registered model).
        folder: the published models/tfjs/<version> folder (its manifest is verified first).
        keras_path: the Keras detector it was converted from (logged beside the TF.js files).
        gate_passed: whether evaluate@stage3 passed its gate.
        models_dir: where champion.json lives; default the folder's parent.
    Returns:
        (the registered entry, whether it became champion, the one-line reason).
    """
    import mlflow

    folder = Path(folder)
    manifest = verify_model_dir(folder)
    quant = manifest.get("quantization", {})
    score = quant.get("map50_95_tfjs", manifest.get("metrics", {}).get("metrics/mAP50-95", float("nan")))
    name = cfg.mlflow.registered_model
    client = _client(cfg.mlflow)
    with stage_run(cfg.mlflow, "export", tags={"tfjs_version": manifest["version"]}) as run:
        mlflow.log_params({"quantization": quant.get("dtype"), "tfjs_version": manifest["version"]})
        sizes = sum(f["size"] for f in manifest["files"].values())
        mlflow.log_metrics({"size_bytes": sizes, "map50_95_tfjs": score, **_parity_metrics(quant)})
        mlflow.log_artifact(str(keras_path), artifact_path="keras")
        mlflow.log_artifacts(str(folder), artifact_path=f"tfjs/{manifest['version']}")
        if not client.search_registered_models(filter_string=f"name = '{name}'"):
            client.create_registered_model(name)
        tags = {
            "tfjs_version": manifest["version"],
            "map50_95": f"{score:.6f}",
            "quantization": str(quant.get("dtype")),
        }
        tags["gate_passed"] = "true" if gate_passed else "false"
        tags["keras_sha256"] = str(manifest.get("source", {}).get("sha256", ""))
        mv = client.create_model_version(
            name, source=run.info.artifact_uri, run_id=run.info.run_id, tags=tags
        )
    entry = _entry(client.get_model_version(name, mv.version))
    promoted, reason = promotion_decision(entry, champion(client, name))
    if promoted and tags["keras_sha256"] in _rolled_back_weights(client, name):
        # `dvc repro` reruns export after a rollback (champion.json changed under its outs): the same
        # weights must not quietly take champion back. `registry promote` can still choose them.
        promoted, reason = False, f"v{entry.number}: these weights were rolled back before ({reason})"
    if promoted:
        _set_champion(
            client, name, entry, [*_history(client, name), entry.number], models_dir or folder.parent
        )
    outcome = "-> champion" if promoted else "registered, champion unchanged"
    print(f"registry: {name} v{entry.number} ({entry.version}) {outcome}: {reason}")
    return entry, promoted, reason


def _rolled_back_weights(client: Any, name: str) -> set[str]:
    """keras_sha256 of every version that was rolled back from champion."""
    return {
        mv.tags.get("keras_sha256", "")
        for mv in client.search_model_versions(f"name = '{name}'")
        if mv.tags.get("rolled_back") == "true" and mv.tags.get("keras_sha256")
    }


def _parity_metrics(quant: dict[str, Any]) -> dict[str, float]:
    parity = quant.get("parity", {})
    return {f"parity_{k}": float(v) for k, v in parity.items() if isinstance(v, int | float)}


def list_versions(cfg: Params) -> list[dict[str, Any]]:
    """Every registered version, newest first, with its aliases; printed as a table."""
    name = cfg.mlflow.registered_model
    client = _client(cfg.mlflow)
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        print(f"registry: no model '{name}' registered yet")
        return []
    aliases = client.get_registered_model(name).aliases  # {alias: version}
    rows = []
    for mv in sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: -int(v.version)):
        e = _entry(mv)
        held = ",".join(a for a, v in aliases.items() if str(v) == str(e.number))
        rows.append({**e.__dict__, "quantization": mv.tags.get("quantization"), "aliases": held})
    print(f"{'v':>4}  {'version':<34} {'quant':<8} {'mAP50-95':>8}  gate  aliases")
    for r in rows:
        gate = "pass" if r["gate_passed"] else "fail"
        quant = str(r["quantization"])
        print(
            f"{r['number']:>4}  {r['version']:<34} {quant:<8} {r['map50_95']:>8.4f}  {gate}  {r['aliases']}"
        )
    return rows


def _resolve(client: Any, name: str, version: str | None) -> Entry:
    """A version given as the MLflow number or the TF.js folder name; the newest when None."""
    versions = [_entry(mv) for mv in client.search_model_versions(f"name = '{name}'")]
    if not versions:
        raise ValueError(f"registry: no versions of '{name}' registered yet")
    if version is None:
        return max(versions, key=lambda e: e.number)
    for e in versions:
        if version in (str(e.number), e.version):
            return e
    known = ", ".join(f"{e.number} ({e.version})" for e in sorted(versions, key=lambda e: e.number))
    raise ValueError(f"registry: --version {version!r} not registered; known: {known}")


def promote(
    cfg: Params, version: str | None = None, models_dir: Path = TFJS_DIR, reason: str | None = None
) -> Entry:
    """Give `champion` to `version` (default: the newest) if the champion rule allows; else ValueError.

    A person may over-rule the rule with a `reason` (test mAP50-95 cannot see every lever: one that reads
    drawings better may move it by noise); the reason is kept as the version's `promoted_over_rule` tag.
    A version that did not pass its gate is never promoted.
    """
    name = cfg.mlflow.registered_model
    client = _client(cfg.mlflow)
    entry = _resolve(client, name, version)
    current = champion(client, name)
    if current is not None and current.number == entry.number:
        print(f"registry: v{entry.number} ({entry.version}) already is champion")
        return entry
    ok, rule = promotion_decision(entry, current)
    if not ok:
        if not reason or not entry.gate_passed:
            raise ValueError(f"registry: not promoted: {rule}; champion unchanged")
        client.set_model_version_tag(name, str(entry.number), "promoted_over_rule", reason)
        rule = f"{rule}, over-ruled: {reason}"
    _set_champion(client, name, entry, [*_history(client, name), entry.number], models_dir)
    print(f"registry: champion -> v{entry.number} ({entry.version}): {rule}")
    return entry


def rollback(cfg: Params, models_dir: Path = TFJS_DIR) -> Entry:
    """Give `champion` back to the version that held it before the current one."""
    name = cfg.mlflow.registered_model
    client = _client(cfg.mlflow)
    history = _history(client, name)
    if len(history) < 2:
        raise ValueError(f"registry: no previous champion to roll back to (history: {history})")
    dropped = history.pop()
    entry = _entry(client.get_model_version(name, str(history[-1])))
    _set_champion(client, name, entry, history, models_dir)
    client.set_model_version_tag(name, str(dropped), "rolled_back", "true")
    print(f"registry: rolled back v{dropped} -> champion v{entry.number} ({entry.version})")
    return entry


def main(
    params: str | Path = DEFAULT_PARAMS_FILE,
    action: str = "list",
    version: str | None = None,
    reason: str | None = None,
) -> Any:
    """`multidigit registry list|promote|rollback [--version V] [--reason TEXT]`.

    Args:
        params: the params YAML (its mlflow block).
        action: list, promote or rollback.
        version: for promote: MLflow version number or TF.js folder name (default: newest).
        reason: for promote: why the champion rule is over-ruled (kept as a tag on the version).
    Returns:
        The rows (list) or the new champion's Entry.
    """
    if action not in ACTIONS:
        raise ValueError(f"registry: action {action!r}, allowed: {', '.join(ACTIONS)}")
    cfg = load_params(params)
    if action == "list":
        return list_versions(cfg)
    if action == "promote":
        return promote(cfg, version, reason=reason)
    if version is not None or reason is not None:
        raise ValueError("registry: rollback takes no --version or --reason (it restores the last champion)")
    return rollback(cfg)
