"""`train@<stage>`: one curriculum stage of the detector.

stage1 starts from the pretrained backbone (models/pretrain/backbone.keras), stage2 and stage3 from the
previous stage's detector, so DVC reruns only the stages downstream of a change. Keras `fit` over a
prefetching tf.data pipeline, linear warm-up then cosine LR, best-epoch checkpoint, early stopping,
CSV history, MLflow (params, per-epoch metrics, model and plots as artifacts).

Writes models/<stage>/{detector.keras, history.csv, learning_curves.png, train_info.json}.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multidigit import console, precision
from multidigit.atomic import atomic_path, save_json
from multidigit.constants import DEFAULT_PARAMS_FILE, MNIST_OUT, MODELS_DIR, STAGES
from multidigit.keras_file import save_keras
from multidigit.params import Params, StageTrainParams, load_params
from multidigit.pretrain import BACKBONE_FILE  # what the pretrain stage writes, named once there

DETECTOR_FILE = "detector.keras"
HISTORY_FILE = "history.csv"
CURVES_FILE = "learning_curves.png"
INFO_FILE = "train_info.json"


@dataclass
class StageResult:
    """What one stage produced: the trained detector and its train_info.json numbers."""

    detector: Any
    info: dict[str, float]


def init_source(stage: str, cfg: StageTrainParams, models_dir: Path = MODELS_DIR) -> Path | None:
    """The file a stage's weights start from: the backbone, the previous detector, or None (scratch).

    Raises:
        ValueError: stage1 asks for `previous` (it has none).
        FileNotFoundError: the file is missing.
    """
    if cfg.init == "scratch":
        return None
    if cfg.init == "pretrained":
        path = models_dir / "pretrain" / BACKBONE_FILE
        hint = "dvc repro pretrain"
    else:
        index = STAGES.index(stage)
        if index == 0:
            raise ValueError(f"train.stages.{stage}.init: 'previous' has no earlier stage; use pretrained")
        path = models_dir / STAGES[index - 1] / DETECTOR_FILE
        hint = f"dvc repro train@{STAGES[index - 1]}"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: needed by train.stages.{stage}.init={cfg.init}; run `{hint}`")
    return path


def stage_seed(cfg: Params, stage: str) -> int:
    """The Keras seed a stage trains under (one per stage, so a rerun of one stage alone repeats it)."""
    return cfg.seed + STAGES.index(stage)


def initial_detector(cfg: Params, init: str, path: Path | None) -> Any:
    """A fresh detector with weights loaded from `path` per `init` (scratch: seeded random)."""
    import keras

    from multidigit.model import BACKBONE_NAME, build_detector

    detector = build_detector(cfg.model)
    if path is None:
        return detector
    source = keras.saving.load_model(path, compile=False)
    target = detector.get_layer(BACKBONE_NAME) if init == "pretrained" else detector
    if len(source.weights) != len(target.weights) or any(
        a.shape != b.shape for a, b in zip(source.weights, target.weights, strict=True)
    ):
        raise ValueError(f"{path}: weights do not fit model {cfg.model.model_dump()}; retrain it")
    target.set_weights(source.get_weights())
    return detector


def compile_detector(detector: Any, cfg: Params, stage_cfg: StageTrainParams, steps: int) -> None:
    """Adam with linear warm-up to the stage LR, then cosine decay to 0 over `steps` updates."""
    import keras

    from multidigit.loss import DetectionLoss, component_metrics

    warmup = round(cfg.train.warmup * steps)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else stage_cfg.lr,
        decay_steps=max(steps - warmup, 1),
        warmup_target=stage_cfg.lr if warmup else None,
        warmup_steps=warmup,
    )
    detector.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=DetectionLoss(cfg.loss, cfg.model.stride),
        metrics=component_metrics(cfg.loss, cfg.model.stride),
    )


def _mlflow_callback() -> Any:
    """A Keras callback logging every epoch's logs to the active MLflow run (if any)."""
    import keras
    import mlflow

    class MlflowEpochs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if mlflow.active_run() is not None:
                mlflow.log_metrics({k: float(v) for k, v in (logs or {}).items()}, step=epoch)

    return MlflowEpochs()


def fit_stage(
    cfg: Params,
    stage: str,
    detector: Any,
    train: Any,
    val: Any,
    work: Path,
    verbose: int | None = None,
    digits: tuple | None = None,
) -> int:
    """Fit `detector` in place on canvases; returns the epochs run. Best-val-loss weights end loaded.

    Args:
        cfg: all params. stage: the stage name. detector: a built detector (weights initialised).
        train, val: `canvas.Canvases`. work: folder for the checkpoint and the CSV history.
        verbose: Keras' verbose mode; None = `console.keras_verbose()`.
        digits: MNIST train (images, labels); needed when the stage's `written` > 0 or `fresh` is on.
    Returns:
        Epochs run (early stopping may cut them short).
    """
    import keras

    from multidigit import fresh
    from multidigit.data_pipeline import make_dataset, training_dataset

    stage_cfg, model_cfg = cfg.train.stages[stage], cfg.model
    bs = cfg.train.batch_size
    args = (bs, model_cfg.stride, model_cfg.boxes_per_cell, cfg.train.prefetch)
    neighbours = cfg.train.neighbour_cells
    train = fresh.first_epoch(cfg, stage, train, digits)
    feed = None
    if stage_cfg.fresh and stage_cfg.epochs > 1:
        if digits is None:
            raise ValueError(f"train.stages.{stage}.fresh: needs the MNIST train digits")
        feed = fresh.FreshFeed(cfg, stage, digits, len(train), stage_cfg.epochs)
    train_ds, steps = training_dataset(
        train, feed, *args, seed=cfg.seed, epochs=stage_cfg.epochs, neighbours=neighbours
    )
    val_ds = make_dataset(val, *args, neighbours=neighbours)
    compile_detector(detector, cfg, stage_cfg, steps=stage_cfg.epochs * steps)
    best = work / "best.weights.h5"
    callbacks = [
        keras.callbacks.ModelCheckpoint(best, save_best_only=True, save_weights_only=True),
        keras.callbacks.EarlyStopping(patience=stage_cfg.patience),
        keras.callbacks.CSVLogger(work / HISTORY_FILE),
        _mlflow_callback(),
    ]
    try:
        # shuffle=False: the dataset reshuffles itself each pass (its seed); Keras cannot shuffle a
        # tf.data.Dataset and warns "shuffle=True was passed, but will be ignored" at its default.
        history = detector.fit(
            train_ds,
            validation_data=val_ds,
            epochs=stage_cfg.epochs,
            steps_per_epoch=steps,
            callbacks=callbacks,
            verbose=console.keras_verbose() if verbose is None else verbose,
            shuffle=False,
        )
    finally:
        if feed is not None:
            feed.close()
    detector.load_weights(best)
    return len(history.epoch)


def trained_detector(
    cfg: Params,
    stage: str,
    init: tuple[str, Path | None],
    train: Any,
    val: Any,
    work: Path,
    verbose: int | None = None,
    digits: tuple | None = None,
) -> tuple[Any, int, float]:
    """A detector initialised by `initial_detector(cfg, *init)` and fitted by `fit_stage`, both under
    `train.precision`'s policy; returns (the detector in float32, epochs run, fit seconds)."""
    from multidigit.model import build_detector

    with precision.policy(cfg.train.precision):
        detector = initial_detector(cfg, *init)
        start = time.perf_counter()
        epochs = fit_stage(cfg, stage, detector, train, val, work, verbose=verbose, digits=digits)
        wall = time.perf_counter() - start
    return precision.float32_copy(detector, lambda: build_detector(cfg.model)), epochs, wall


def stage_digits(stage_cfg: StageTrainParams, mnist_dir: Path | str = MNIST_OUT) -> tuple | None:
    """The MNIST *train* split (images, labels) when the stage makes canvases at train time, else None.

    Never val or test: val scores the proxy and the drawn split is MNIST test digits.
    """
    from multidigit.mnist import read_split

    return read_split("train", mnist_dir) if stage_cfg.written or stage_cfg.fresh else None


def train_stage(
    cfg: Params,
    stage: str,
    work: Path,
    models_dir: Path = MODELS_DIR,
    canvas_root: Path | None = None,
    mnist_dir: Path | str = MNIST_OUT,
) -> StageResult:
    """Train one stage from its init source on its canvases; pure apart from files under `work`.

    Args:
        cfg: all params. stage: "stage1" | "stage2" | "stage3".
        work: scratch folder (checkpoint, history.csv).
        models_dir: where the pretrained backbone and earlier detectors live.
        canvas_root: data/canvases (default `constants.CANVAS_OUT`).
        mnist_dir: data/mnist; its train split feeds the stage's written share and fresh epochs.
    Returns:
        The `StageResult` (best-epoch detector, info without the saved file size).
    """
    import keras

    from multidigit.canvas import read_canvases
    from multidigit.constants import CANVAS_OUT
    from multidigit.data_pipeline import subset
    from multidigit.model import count_macs

    stage_cfg = cfg.train.stages[stage]
    root = CANVAS_OUT if canvas_root is None else canvas_root
    train = subset(read_canvases(stage, "train", root), stage_cfg.canvases)
    val = subset(read_canvases(stage, "val", root), stage_cfg.val_canvases)
    digits = stage_digits(stage_cfg, mnist_dir)
    keras.utils.set_random_seed(stage_seed(cfg, stage))
    source = init_source(stage, stage_cfg, models_dir)
    detector, epochs, wall = trained_detector(
        cfg, stage, (stage_cfg.init, source), train, val, work, digits=digits
    )
    info = {
        "params": float(detector.count_params()),
        "macs": float(count_macs(detector)),
        "epochs_run": float(epochs),
        "train_canvases": float(len(train)),
        "val_canvases": float(len(val)),
        "fit_seconds": round(wall, 1),
        "canvases_per_second": round(epochs * len(train) / wall, 1),
    }
    return StageResult(detector=detector, info=info)


def plot_history(history_csv: Path, out_png: Path) -> None:
    """Learning curves (train vs val per loss term) from a Keras CSVLogger file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(history_csv) as fh:
        rows = list(csv.DictReader(fh))
    epochs = [int(r["epoch"]) + 1 for r in rows]
    keys = ["loss", "obj_loss", "box_loss", "cls_loss", "box_iou"]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2))
    for ax, key in zip(axes, keys, strict=True):
        for prefix, style in (("", "-o"), ("val_", "--s")):
            if rows and prefix + key in rows[0]:
                ax.plot(epochs, [float(r[prefix + key]) for r in rows], style, label=prefix[:-1] or "train")
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.legend()
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


def write_stage(result: StageResult, work: Path, out_dir: Path, wall_seconds: float) -> dict[str, float]:
    """Save detector.keras, history.csv, learning_curves.png and train_info.json atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    save_keras(result.detector, out_dir / DETECTOR_FILE)
    with atomic_path(out_dir / HISTORY_FILE) as tmp:
        tmp.write_bytes((work / HISTORY_FILE).read_bytes())
    plot_history(out_dir / HISTORY_FILE, out_dir / CURVES_FILE)
    info = {
        **result.info,
        "size_bytes": float((out_dir / DETECTOR_FILE).stat().st_size),
        "wall_seconds": round(wall_seconds, 1),
    }
    save_json(out_dir / INFO_FILE, info)
    return info


def _log_run(cfg: Params, stage: str, info: dict[str, float], out_dir: Path) -> None:
    import mlflow

    stage_cfg = cfg.train.stages[stage]
    flat = {
        **{f"model.{k}": v for k, v in cfg.model.model_dump().items()},
        **{f"loss.{k}": v for k, v in cfg.loss.model_dump().items()},
        **{f"train.{k}": v for k, v in stage_cfg.model_dump().items()},
        "train.batch_size": cfg.train.batch_size,
        "train.warmup": cfg.train.warmup,
        "train.precision": precision.resolve(cfg.train.precision),
    }
    mlflow.log_params(flat)
    mlflow.log_metrics({f"info/{k}": v for k, v in info.items()})
    for name in (DETECTOR_FILE, HISTORY_FILE, CURVES_FILE, INFO_FILE):
        mlflow.log_artifact(str(out_dir / name))


def main(params: str | Path = DEFAULT_PARAMS_FILE, stage: str = "stage1") -> dict[str, float]:
    """`multidigit train --stage S`: train one curriculum stage and write models/<stage>/.

    Args:
        params: the params YAML.
        stage: "stage1" | "stage2" | "stage3".
    Returns:
        The train_info.json numbers.
    """
    import tempfile

    from multidigit.tracking import stage_run

    if stage not in STAGES:
        raise ValueError(f"stage: {stage!r} is not one of {', '.join(STAGES)}")
    start = time.perf_counter()
    cfg = load_params(params)
    out_dir = MODELS_DIR / stage
    with stage_run(cfg.mlflow, f"train@{stage}"), tempfile.TemporaryDirectory() as work:
        result = train_stage(cfg, stage, Path(work))
        info = write_stage(result, Path(work), out_dir, time.perf_counter() - start)
        _log_run(cfg, stage, info, out_dir)
    print(f"train@{stage}: " + ", ".join(f"{k}={v:g}" for k, v in sorted(info.items())))
    return info
