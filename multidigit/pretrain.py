"""`pretrain`: train the detector's backbone as a 28 x 28 digit classifier and save it for train@stage1.

Sources (the transfer-learning ablation): `mnist` = plain MNIST digits (B), `synthetic` = 28 x 28 crops
centred on the digits of the generated stage-1 canvases (A), `none` = no training, a seeded random
backbone (C, from scratch). Writes models/pretrain/{backbone.keras, pretrain_info.json}.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from multidigit.atomic import save_json
from multidigit.constants import CANVAS_OUT, DEFAULT_PARAMS_FILE, DIGIT_SIZE, MODELS_DIR
from multidigit.keras_file import save_keras
from multidigit.params import ModelParams, Params, PretrainParams, load_params

OUT_DIR = MODELS_DIR / "pretrain"
BACKBONE_FILE = "backbone.keras"
INFO_FILE = "pretrain_info.json"
SYNTHETIC_STAGE = "stage1"  # one digit per canvas at scale 1: each crop holds one whole digit
# Digits are classified on a black 40 x 40 patch (10 x 10 cells at stride 4), centre jittered by up to
# JITTER px: the backbone then sees what it sees at a digit's centre cell on a canvas.
PATCH_SIZE = 40
JITTER = 2


def canvas_crops(images: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PATCH_SIZE square crops centred on every digit box of a set of canvases.

    Args:
        images: uint8 (N, 100, 100). boxes: (N, K, 4) xywh. labels: (N, K), -1 padding.
    Returns:
        (crops uint8 (M, PATCH_SIZE, PATCH_SIZE), labels uint8 (M,)) for the M real boxes.
    """
    half = PATCH_SIZE // 2
    padded = np.pad(images, ((0, 0), (half, half), (half, half)))
    n_idx, k_idx = np.nonzero(labels >= 0)
    box = boxes[n_idx, k_idx]
    # Centre in padded coordinates minus half the crop = centre in canvas coordinates.
    x0 = np.rint(box[:, 0] + box[:, 2] / 2).astype(int)
    y0 = np.rint(box[:, 1] + box[:, 3] / 2).astype(int)
    rows = y0[:, None] + np.arange(PATCH_SIZE)[None, :]
    cols = x0[:, None] + np.arange(PATCH_SIZE)[None, :]
    crops = padded[n_idx[:, None, None], rows[:, :, None], cols[:, None, :]]
    return crops.astype(np.uint8), labels[n_idx, k_idx].astype(np.uint8)


def pad_digits(digits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Paste 28 x 28 digits onto black PATCH_SIZE patches, centre jittered by up to JITTER px.

    Args:
        digits: uint8 (N, 28, 28).
        rng: draws the offsets.
    Returns:
        uint8 (N, PATCH_SIZE, PATCH_SIZE).
    """
    margin = (PATCH_SIZE - DIGIT_SIZE) // 2
    out = np.zeros((len(digits), PATCH_SIZE, PATCH_SIZE), np.uint8)
    offsets = rng.integers(margin - JITTER, margin + JITTER + 1, size=(len(digits), 2))
    for dy, dx in {tuple(o) for o in offsets.tolist()}:  # one slice assignment per distinct offset
        sel = (offsets[:, 0] == dy) & (offsets[:, 1] == dx)
        out[sel, dy : dy + DIGIT_SIZE, dx : dx + DIGIT_SIZE] = digits[sel]
    return out


def digit_data(source: str, limit: int, seed: int, canvas_root: Path = CANVAS_OUT) -> dict[str, np.ndarray]:
    """Train/val patches of a source: {"x_train", "y_train", "x_val", "y_val"}, x uint8 (N, 40, 40)."""
    out, rng = {}, np.random.default_rng(seed)
    for split in ("train", "val"):
        if source == "mnist":
            from multidigit.mnist import read_split

            x, y = read_split(split)
            x = pad_digits(x[:limit] if split == "train" and limit else x, rng)
        elif source == "synthetic":
            from multidigit.canvas import read_canvases

            c = read_canvases(SYNTHETIC_STAGE, split, canvas_root)
            x, y = canvas_crops(c.images, c.boxes, c.labels)
        else:
            raise ValueError(f"pretrain.source: {source!r} has no digits; allowed: mnist, synthetic")
        if split == "train" and limit:
            x, y = x[:limit], y[:limit]
        out[f"x_{split}"], out[f"y_{split}"] = x, y
    return out


def pretrain_backbone(
    model_params: ModelParams,
    params: PretrainParams,
    seed: int,
    data: dict[str, np.ndarray] | None,
    precision: str = "float32",
) -> tuple[Any, dict[str, float]]:
    """Build the backbone at PATCH_SIZE px and train it (with a pooled softmax head) on `data`.

    Args:
        model_params: the model block (backbone kind, width, stride).
        params: the pretrain block.
        seed: initialisation and shuffling seed.
        data: `digit_data` output, or None to leave the backbone at its seeded random init.
        precision: `train.precision`, what the fit computes in; the backbone returned is float32.
    Returns:
        (backbone, info) with val accuracy and wall seconds (0 epochs when data is None).
    """
    import keras

    from multidigit import precision as numerics
    from multidigit.model import build_backbone

    keras.utils.set_random_seed(seed)
    with numerics.policy(precision):
        backbone = build_backbone(model_params, size=PATCH_SIZE)
        info = _fit_classifier(backbone, params, data)
    return numerics.float32_copy(backbone, lambda: build_backbone(model_params, size=PATCH_SIZE)), info


def _fit_classifier(backbone: Any, params: PretrainParams, data: dict[str, np.ndarray] | None) -> dict:
    """Fit `backbone` in place as an MNIST classifier (`model.classifier`); returns the info numbers."""
    import keras

    from multidigit.model import classifier

    info = {"params": float(backbone.count_params()), "epochs": 0.0, "val_accuracy": 0.0}
    if data is None or params.epochs == 0:
        return info
    model = classifier(backbone)
    steps = params.epochs * int(np.ceil(len(data["x_train"]) / params.batch_size))
    model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(params.lr, steps)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    scale = lambda x: (x.astype(np.float32) / 255.0)[..., None]  # noqa: E731 same scaling as preprocess
    history = model.fit(
        scale(data["x_train"]),
        data["y_train"],
        batch_size=params.batch_size,
        epochs=params.epochs,
        validation_data=(scale(data["x_val"]), data["y_val"]),
        verbose=2,
    )
    info.update(epochs=float(params.epochs), val_accuracy=float(history.history["val_accuracy"][-1]))
    return info


def run(cfg: Params, out_dir: Path = OUT_DIR, canvas_root: Path = CANVAS_OUT) -> dict[str, float]:
    """Pretrain per cfg.pretrain and write backbone.keras + pretrain_info.json into `out_dir`."""
    start = time.perf_counter()
    p = cfg.pretrain
    data = None if p.source == "none" else digit_data(p.source, p.limit, cfg.seed, canvas_root)
    backbone, info = pretrain_backbone(cfg.model, p, cfg.seed, data, cfg.train.precision)
    save_keras(backbone, Path(out_dir) / BACKBONE_FILE)
    info["wall_seconds"] = round(time.perf_counter() - start, 1)
    info["train_digits"] = float(0 if data is None else len(data["x_train"]))
    save_json(Path(out_dir) / INFO_FILE, info)
    return info


def main(params: str | Path = DEFAULT_PARAMS_FILE) -> dict[str, float]:
    """`multidigit pretrain`: pretrain the backbone per the pretrain block, tracked in MLflow.

    Args:
        params: the params YAML.
    Returns:
        The pretrain_info.json numbers.
    """
    import mlflow

    from multidigit.tracking import stage_run

    cfg = load_params(params)
    with stage_run(cfg.mlflow, "pretrain", tags={"pretrain.source": cfg.pretrain.source}):
        mlflow.log_params({f"pretrain.{k}": v for k, v in cfg.pretrain.model_dump().items()})
        info = run(cfg)
        mlflow.log_metrics({f"pretrain/{k}": v for k, v in info.items()})
        mlflow.log_artifact(str(OUT_DIR / BACKBONE_FILE))
    print("pretrain: " + ", ".join(f"{k}={v:g}" for k, v in sorted(info.items())))
    return info
