"""The one schema for params.yaml: a frozen pydantic model per block, validated before any work.

Every stage reads its block through `load_params`. A bad file raises `ParamsError` with one line that
names the dotted key, the value and what is allowed; the CLI turns it into exit code 2.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from multidigit.constants import CANVAS_SIZE, DEFAULT_PARAMS_FILE, DIGIT_SIZE, STAGES

PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
PosFloat = Annotated[float, Field(gt=0.0)]
NonNegFloat = Annotated[float, Field(ge=0.0)]


class ParamsError(ValueError):
    """params.yaml is unreadable or breaks the schema; the message is one line."""


class Block(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_range(lo: float, hi: float, name: str) -> None:
    if lo > hi:
        raise ValueError(f"{name}: min {lo} > max {hi}, need min <= max")


def _check_law(law: tuple[float, float, float], name: str) -> None:
    """A triangular law [min, mode, max] must be ordered."""
    lo, mode, hi = law
    if not lo <= mode <= hi:
        raise ValueError(f"{name}: need min <= mode <= max, got {list(law)}")


# ---------------------------------------------------------------- mnist
class MnistParams(Block):
    dir: str | None = None  # folder of IDX .gz files; None: $MNIST_DIR, ../shared/data/mnist, mirrors
    mirrors: list[str] = Field(min_length=1)  # base URLs tried in order when no local copy exists
    timeout_s: PosFloat = 30.0  # per HTTP request
    retries: NonNegInt = 3  # extra tries per mirror
    val_size: Annotated[int, Field(ge=1, le=30000)] = 5000  # digits carved from train for validation


# ---------------------------------------------------------------- generate
class AugmentParams(Block):
    translate: Annotated[float, Field(ge=0.0, le=0.3)] = 0.08  # fraction of the 28 px digit box
    zoom: Annotated[float, Field(ge=0.0, le=0.5)] = 0.1  # +- fraction (RandomZoom)
    rotate_deg: Annotated[float, Field(ge=0.0, le=45.0)] = 10.0  # +- degrees (RandomRotation)
    # Re-stroking (a stage's `restroke` share of digits, and training's written-layout canvases): the digit's
    # skeleton redrawn with the page's round brush. Brush widths in 400-px buffer pixels, drawn from a
    # triangular law [min, mode, max], whatever the digit's size (the drawn split has its own, drawn.brush).
    brush: tuple[PosFloat, PosFloat, PosFloat] = (2.0, 10.0, 30.0)  # reaches past the slider (4-24)
    width_jitter: Fraction = 0.15  # each stroke's width times U(1 - j, 1 + j) (training digits only)
    point_jitter: Annotated[float, Field(ge=0.0, le=2.0)] = 0.3  # stroke-point offset sd, digit pixels

    @model_validator(mode="after")
    def _brush_order(self) -> AugmentParams:
        _check_law(self.brush, "brush")
        return self


class SplitCounts(Block):
    train: PosInt
    val: PosInt
    test: PosInt
    drawn: NonNegInt = 0  # canvases of the drawn split (MNIST test digits re-stroked); 0 = none


class DrawnParams(Block):
    """Layout of the drawn split: digits written in a row or two, as people draw them on the page."""

    digits: tuple[PosInt, PosInt] = (1, 6)  # [min, max] digits per canvas
    height: tuple[PosFloat, PosFloat] = (15.0, 60.0)  # [min, max] digit height, canvas pixels
    two_rows: Fraction = 0.3  # probability that a canvas of 3 or more digits is written in two rows
    slant_deg: Annotated[float, Field(ge=0.0, le=30.0)] = 6.0  # baseline angle drawn from +- this
    gap: tuple[NonNegFloat, NonNegFloat] = (0.1, 0.5)  # [min, max] gap between digits, in digit heights
    # The drawn split's brush widths: the page's slider (4-24), triangular [min, mode, max]. Its own law, so
    # a change to training's `augment.brush` never moves the split it is judged on.
    brush: tuple[PosFloat, PosFloat, PosFloat] = (4.0, 10.0, 24.0)

    @model_validator(mode="after")
    def _ranges(self) -> DrawnParams:
        _check_range(*self.digits, "digits")
        _check_range(*self.height, "height")
        _check_range(*self.gap, "gap")
        _check_law(self.brush, "brush")
        return self


class StageDataParams(Block):
    digits: tuple[PosInt, PosInt]  # [min, max] digits per canvas
    scale: tuple[PosFloat, PosFloat]  # [min, max] digit size relative to 28 px
    max_overlap: Fraction  # largest fraction of a digit's box another digit may cover
    restroke: Fraction  # share of digits redrawn from their strokes with the page's brush
    canvases: SplitCounts  # canvases per split

    @model_validator(mode="after")
    def _ranges(self) -> StageDataParams:
        _check_range(*self.digits, "digits")
        _check_range(*self.scale, "scale")
        return self


class GenerateParams(Block):
    canvas_size: Literal[100] = CANVAS_SIZE  # pixels; the model and page are built for 100
    shard_size: PosInt = 500  # canvases per shard file
    workers: PosInt = 2  # Prefect task-runner workers
    task_runner: Literal["threads", "processes", "dask"] = "threads"
    # dask: None starts a LocalCluster of `workers` processes; an address (tcp://host:8786) uses that
    # running scheduler, whose workers need the workspace on shared storage at the same path.
    dask_address: Annotated[str, Field(pattern=r"^([a-z]+://)?\S+:\d+$")] | None = None
    retries: NonNegInt = 2  # Prefect retries for a shard task
    # Under the stack, send shard batches to the other workers as generate-batch runs (same bytes either
    # way); off: on one machine the flow's own task runner already uses its cores (benchmarks/pipeline.py).
    fanout: bool = False
    max_attempts: PosInt = 50  # placement tries per digit before the canvas is re-sampled
    augment: AugmentParams = AugmentParams()
    drawn: DrawnParams = DrawnParams()
    stages: dict[Literal["stage1", "stage2", "stage3"], StageDataParams]

    @model_validator(mode="after")
    def _dask_only(self) -> GenerateParams:
        # an address the threads or processes runner would silently ignore is a mistake worth stopping on
        if self.dask_address and self.task_runner != "dask":
            raise ValueError(f"dask_address is set but task_runner is {self.task_runner!r}; need 'dask'")
        return self

    @model_validator(mode="after")
    def _fits(self) -> GenerateParams:
        for name, stage in self.stages.items():
            _check_fits(name, stage, self.canvas_size)
        return self


def _check_fits(name: str, stage: StageDataParams, canvas: int) -> None:
    """Refuse digit counts whose boxes cannot fit on the canvas without forbidden overlap."""
    side = DIGIT_SIZE * stage.scale[0]
    if side > canvas:
        raise ValueError(f"stages.{name}.scale: min {stage.scale[0]} gives {side:.0f} px > canvas")
    # Boxes may share (1 - max_overlap) of their area at most; keep a 2x margin for random packing.
    usable = canvas * canvas / (side * side * (1.0 - stage.max_overlap * 0.9))
    if stage.digits[1] > usable / 2:
        raise ValueError(
            f"stages.{name}.digits: max {stage.digits[1]} cannot fit: at scale {stage.scale[0]} "
            f"and max_overlap {stage.max_overlap} a {canvas} px canvas holds about {int(usable / 2)}"
        )


# ---------------------------------------------------------------- model, loss, training
class ModelParams(Block):
    backbone: Literal["mnist_cnn", "mobilenetv2"] = "mnist_cnn"
    width: Annotated[int, Field(ge=4, le=256)] = 32  # base filter count of mnist_cnn
    alpha: Annotated[float, Field(gt=0.0, le=1.0)] = 0.35  # MobileNetV2 width multiplier
    stride: Literal[2, 4, 5, 10] = 4  # pixels per grid cell: 100 / stride cells a side
    boxes_per_cell: Annotated[int, Field(ge=1, le=4)] = 1
    # Dilations of the 3x3 context convs at grid resolution; (1, 2, 4) sees ~64 px at stride 4, an 8 more
    # doubles that for the ~60 px digits people draw.
    dilations: tuple[Annotated[int, Field(ge=1, le=16)], ...] = (1, 2, 4)
    activation: Literal["relu6", "silu"] = "silu"  # of every conv block (backbone and head)
    head_width: Annotated[int, Field(ge=4, le=512)] | None = None  # the head's 1x1 conv; None = 2 * width
    # 3x3 convs of mnist_cnn at the first downsampled resolution (50 x 50 at stride 4), before the grid:
    # stroke detail for small digits (4 vs 9) that one strided conv alone reads only coarsely.
    fine_convs: Annotated[int, Field(ge=0, le=4)] = 2
    # Filters of one 3x3 conv of mnist_cnn at full resolution (100 x 100), before its first strided conv;
    # 0 = none. A 12-px digit's strokes otherwise reach the grid only through that 4x4 stride-2 conv.
    # 8 since the thirty-fourth pass (docs/tuning.md); another backbone, with its own stem, defaults to 0.
    stem_filters: Annotated[int, Field(ge=0, le=64)] = 8

    @model_validator(mode="before")
    @classmethod
    def _no_default_stem_elsewhere(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("backbone", "mnist_cnn") != "mnist_cnn":
            return {"stem_filters": 0, **data}  # a value set in the file still reaches the check below
        return data

    @model_validator(mode="after")
    def _stem_of_mnist_cnn(self) -> ModelParams:
        # MobileNetV2 has its own stem; a value it would silently ignore is a mistake worth stopping on
        if self.stem_filters and self.backbone != "mnist_cnn":
            raise ValueError(f"stem_filters is {self.stem_filters} but backbone is {self.backbone!r}; need 0")
        return self


class LossParams(Block):
    lambda_coord: PosFloat = 5.0  # box regression weight
    lambda_noobj: PosFloat = 0.5  # objectness weight of empty cells
    lambda_class: PosFloat = 1.0  # class cross-entropy weight
    lambda_iou: Annotated[float, Field(ge=0.0)] = 1.0  # weight of (1 - GIoU) on object slots
    obj_iou: Fraction = 0.5  # objectness target of an object slot: 1 - obj_iou + obj_iou * IoU(pred, gt)
    # bce: the IoU-aware BCE above on the assigned cells (YOLO); heatmap: every cell's objectness learns the
    # digits' Gaussian centre heat with CenterNet's penalty-reduced focal loss (lambda_noobj, obj_iou unused).
    objectness: Literal["bce", "heatmap"] = "bce"


class PretrainParams(Block):
    source: Literal["mnist", "synthetic", "none"] = "mnist"  # B, A, C of the ablation
    epochs: NonNegInt = 1
    batch_size: PosInt = 128
    lr: PosFloat = 2e-3
    limit: NonNegInt = 20000  # train digits to use; 0 = all


class StageTrainParams(Block):
    epochs: PosInt
    lr: PosFloat
    # No defaults: params.yaml sets every key for every stage, and the stages differ.
    patience: PosInt  # early stopping on val loss
    init: Literal["pretrained", "previous", "scratch"]
    canvases: NonNegInt  # train canvases used (the first n); 0 = all
    # val canvases the fit's val loss reads (the first n; 0 = all): early stopping and the best-epoch
    # checkpoint. Evaluation calibrates its threshold on the whole val split, which can be larger.
    val_canvases: NonNegInt = 0
    # Share of each epoch's canvases that are written layouts (multidigit/drawn.py's rows, slant and page
    # brush) of MNIST *train* digits, made at train time (multidigit/fresh.py); they replace shard canvases.
    written: Fraction = 0.0
    # Share of the 1s in those written layouts given the flag continental writers start a 1 with (MNIST's
    # 1s are nearly all bare strokes, so the page read flagged 1s as 7; multidigit/drawn.py `with_flag`).
    flag_ones: Fraction = 0.0
    fresh: bool = False  # epochs after the first see new canvases, generated from seeds ahead of training


class TrainParams(Block):
    batch_size: PosInt = 32
    prefetch: PosInt = 4  # batches the generator runs ahead
    warmup: Fraction = 0.05  # fraction of a stage's steps spent warming the LR up from 0 (then cosine)
    neighbour_cells: bool = True  # also make the 2 cells beside a digit's centre cell responsible for it
    # What training (pretrain included) computes in: float32, mixed_bfloat16 (bfloat16 convolutions, float32
    # weights and loss), or auto (bfloat16 where the CPU has the instructions; multidigit/precision.py).
    precision: Literal["float32", "mixed_bfloat16", "auto"] = "float32"
    stages: dict[Literal["stage1", "stage2", "stage3"], StageTrainParams]


class NmsParams(Block):
    score_threshold: Fraction = 0.5  # default operating point; evaluation calibrates on val
    iou_threshold: Fraction = 0.45
    max_detections: PosInt = 20
    merge: bool = True  # a kept box becomes the score-weighted mean of the same-class boxes it suppressed
    peaks: bool = False  # before NMS, a cell keeps its objectness only where it peaks over its 3 x 3 cells
    # One box per digit: after NMS and the merge, a box overlapping a better-scored shown box of another
    # class by IoU > agnostic_iou, or lying inside it by more than agnostic_containment (intersection over
    # its own area), is not shown (1.0 turns a test off). Chosen on stage-3 val (baseline model, threshold
    # 0.5): count accuracy 0.833 without the rule, 0.989 with 0.5 / 0.8 (0.3-0.5 and 0.7-1.0 within 0.001);
    # containment 0.5 since the sixth tuning pass (drawn-val sequence 0.826 -> 0.836; docs/tuning.md), IoU 0.3
    # since the twenty-third (stage-3 val count 0.952 -> 0.958, the same detector: loose second boxes hidden).
    agnostic_iou: Fraction = 0.3
    agnostic_containment: Fraction = 0.5
    # The containment test also between boxes of one class: NMS judges those by IoU, which for a box nested in
    # another is only their area ratio, so a stroke of a found digit read again as that digit stayed listed.
    containment_any_class: bool = True
    # Fit to ink (`boxes.fit_to_ink`), after the one-box rule: an edge on an empty line moves inward to the
    # first line with ink, by at most ink_shrink x the box's side; an edge on ink moves outward along it by
    # at most ink_grow px. ink_shrink 0 turns it off.
    ink_shrink: Fraction = 0.2
    ink_grow: NonNegInt = 1


# ---------------------------------------------------------------- evaluation, export, tracking
class DrawnGateParams(Block):
    map50: Fraction  # minimum drawn-split mAP@0.5
    sequence_accuracy: Fraction  # minimum share of drawn canvases the page reads exactly, in order


class GateParams(Block):
    map50: Fraction  # no defaults: every stage's gate is set in params.yaml
    map50_95: Fraction
    drawn: DrawnGateParams | None = None  # stage3 only: the drawn split's floors


class EvaluateParams(Block):
    gallery_size: PosInt = 16
    # How val picks the operating score threshold, on what the page lists: `canvas`, the most canvases read
    # exactly (every digit with its class, nothing extra; ties: higher F1), or `f1`, the highest F1.
    operating_point: Literal["canvas", "f1"] = "canvas"
    gates: dict[Literal["stage1", "stage2", "stage3"], GateParams]  # no default: an ungated run is a choice

    @model_validator(mode="after")
    def _drawn_gate_on_stage3(self) -> EvaluateParams:
        for stage, gate in self.gates.items():
            if gate.drawn is not None and stage != "stage3":
                raise ValueError(f"gates.{stage}.drawn: only stage3 scores the drawn split, remove it")
        return self


class ExportParams(Block):
    quantization: Literal["none", "float16", "uint8"] = "float16"
    parity_canvases: PosInt = 50
    float_tolerance: PosFloat = 1e-3
    quantized_tolerance: PosFloat = 0.05  # final scores, quantized model
    quantized_box_tolerance: PosFloat = 2.0  # pixels, final boxes, quantized model
    quantized_mismatches: NonNegInt = 3  # parity canvases whose detections may differ, quantized model
    # The brush width (400-px buffer px) the page renders a drawing's strokes at for the detector, whatever
    # the slider shows (README "The page and the service"); None: read at the width drawn.
    read_brush: PosFloat | None = 12.0
    # The page's second look (multidigit/rescale.py): when the median height of the digits it listed lies
    # outside read_band (canvas px), it reads the strokes again scaled so that it becomes read_height;
    # None: it reads once.
    read_height: PosFloat | None = 30.0
    read_band: tuple[PosFloat, PosFloat] = (24.0, 38.0)

    @model_validator(mode="after")
    def _read_height_needs_read_brush(self) -> ExportParams:
        _check_range(*self.read_band, "read_band")
        if self.read_height is not None and self.read_brush is None:
            raise ValueError("read_height: the second look draws strokes at read_brush; set it, or null both")
        return self


class MlflowParams(Block):
    tracking_uri: str = "sqlite:///mlflow.db"  # $MLFLOW_TRACKING_URI wins when set
    experiment: str = "multidigit"
    registered_model: str = "multidigit-detector"


class Params(Block):
    seed: NonNegInt = 1234
    mnist: MnistParams
    generate: GenerateParams
    model: ModelParams = ModelParams()
    loss: LossParams = LossParams()
    pretrain: PretrainParams = PretrainParams()
    train: TrainParams
    nms: NmsParams = NmsParams()
    evaluate: EvaluateParams
    export: ExportParams = ExportParams()
    mlflow: MlflowParams = MlflowParams()

    @model_validator(mode="after")
    def _stages_complete(self) -> Params:
        for block, stages in (("generate", self.generate.stages), ("train", self.train.stages)):
            missing = [s for s in STAGES if s not in stages]
            if missing:
                raise ValueError(
                    f"{block}.stages: lacks {', '.join(missing)}, need all of {', '.join(STAGES)}"
                )
        return self


# ---------------------------------------------------------------- loading
def _fields_at(model: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    """Names allowed at `path` inside `model`, for 'did you mean' hints."""
    for key in path:
        field = model.model_fields.get(str(key))
        if field is None:
            return list(model.model_fields)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return []
    return list(model.model_fields)


def _format_error(err: dict[str, Any], data: Any) -> str:
    loc = tuple(p for p in err["loc"] if p not in ("function-after",))
    dotted = ".".join(str(p) for p in loc) or "<top>"
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        allowed = _fields_at(Params, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"{dotted}: unknown key (allowed: {', '.join(allowed)}){hint}"
    value = err.get("input")
    shown = "" if kind == "missing" or isinstance(value, dict) else f" = {value!r}"
    msg = msg.removeprefix("Value error, ")
    # Cross-field validators name their key relative to where they sit: "digits: min 5 > max 3".
    relkey, sep, rest = msg.partition(": ")
    if kind == "value_error" and sep and " " not in relkey:
        dotted = f"{dotted}.{relkey}" if loc else relkey
        return f"{dotted}: {rest}"
    return f"{dotted}{shown}: {msg}"


def validate_params(data: Any) -> Params:
    """Validate a parsed params mapping.

    Args:
        data: the mapping read from params.yaml.
    Returns:
        The frozen `Params`.
    Raises:
        ParamsError: one line naming the first bad dotted key and what is allowed.
    """
    if not isinstance(data, dict):
        raise ParamsError(f"params: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return Params.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = _format_error(errors[0], data)
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ParamsError(f"params: {first}{more}") from None


def load_params(path: str | Path = DEFAULT_PARAMS_FILE) -> Params:
    """Read and validate a params YAML file.

    Args:
        path: the YAML file, params.yaml by default.
    Returns:
        The frozen `Params`.
    Raises:
        ParamsError: the file is missing, is not YAML, or breaks the schema.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ParamsError(f"params: cannot read {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ParamsError(f"params: {path}{where} is not valid YAML") from None
    return validate_params(data)
