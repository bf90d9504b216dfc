"""The detector: a fully convolutional backbone, a YOLO-style grid head, and its inference wrapper.

    canvas (B, 100, 100, 1) in [0, 1]
      -> backbone "backbone"   (B, G, G, C)   G = 100 / stride; also the pretrained MNIST feature extractor
      -> head 1x1 convs        (B, G, G, A * 15)
      -> reshape               (B, G, G, A, 15) raw logits (boxes.RAW_CHANNELS)   = build_detector output
      -> DecodeGrid            (B, G*G*A, 15) [x, y, w, h, objectness, 10 class probs] = inference_model

The backbone takes any input size, so the same weights classify 28 x 28 MNIST digits in `pretrain`.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from multidigit import boxes
from multidigit.constants import CANVAS_SIZE, NUM_CLASSES
from multidigit.params import ModelParams

BACKBONE_NAME = "backbone"
OBJECT_PRIOR = 0.01  # initial objectness probability of every slot
# BatchNorm running statistics must settle within a few hundred steps (a stage is ~1-3 epochs);
# Keras' default 0.99 left a 1-epoch MNIST pretrain at 28% val accuracy against 92% train.
BN_MOMENTUM = 0.9
# Downsampling factors per stride: each factor is one strided conv. The first one works on the raw canvas
# (or on `model.stem_filters` maps of it) with a kernel of 2 * factor. A full-width 3x3 stem at 100 x 100
# cost ~45% more CPU per training canvas for the same accuracy budget; a narrow one (8 filters) costs ~6%.
DOWNSAMPLE = {2: (2,), 4: (2, 2), 5: (5,), 10: (2, 5)}


def _conv_bn(x, filters: int, kernel: int = 3, strides: int = 1, dilation: int = 1, name: str = "",
             activation: str = "relu6"):  # fmt: skip
    """Conv (no bias) -> BatchNorm -> ReLU6 or SiLU (`model.activation`); BatchNorm folds away at export."""
    x = layers.Conv2D(
        filters, kernel, strides, padding="same", dilation_rate=dilation, use_bias=False, name=f"{name}_conv"
    )(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    if activation == "silu":
        return layers.Activation("silu", name=f"{name}_silu")(x)
    return layers.ReLU(6.0, name=f"{name}_relu")(x)


def _context(x, filters: int, dilations: tuple[int, ...], activation: str = "relu6"):
    """Dilated 3x3 convs at grid resolution (`model.dilations` set the receptive field); both backbones."""
    for i, dilation in enumerate(dilations):
        x = _conv_bn(x, filters, dilation=dilation, name=f"context{i}", activation=activation)
    return x


def mnist_cnn_backbone(params: ModelParams, size: int) -> keras.Model:
    """Small plain CNN: an optional narrow 3x3 conv at full resolution, one strided conv per downsampling
    factor, fine convs at the first downsampled resolution, context convs at the grid.

    Args:
        params: the model block (width, stride, stem_filters, fine_convs, dilations).
        size: input side in pixels.
    Returns:
        Model (B, size, size, 1) -> (B, size/stride, size/stride, 2 * width).
    """
    inputs = keras.Input((size, size, 1), name="image")
    x, factors = inputs, DOWNSAMPLE[params.stride]
    if params.stem_filters:
        x = _conv_bn(x, params.stem_filters, name="stem", activation=params.activation)
    for i, factor in enumerate(factors):
        filters = 2 * params.width if i == len(factors) - 1 else params.width // 2
        kernel = 2 * factor if i == 0 else max(3, factor)
        x = _conv_bn(x, filters, kernel=kernel, strides=factor, name=f"down{i}", activation=params.activation)
        for j in range(params.fine_convs if i == 0 else 0):
            x = _conv_bn(x, filters, name=f"fine{j}", activation=params.activation)
    x = _context(x, 2 * params.width, params.dilations, params.activation)
    return keras.Model(inputs, x, name=BACKBONE_NAME)


# MobileNetV2 block whose output has the given stride (Keras layer names).
MOBILENET_TAPS = {2: "expanded_conv_project_BN", 4: "block_2_add", 5: "block_2_add", 10: "block_5_add"}


def mobilenetv2_backbone(params: ModelParams, size: int) -> keras.Model:
    """Keras MobileNetV2 (weights=None, width `alpha`) on one grey channel, cut at the grid stride.

    Strides 5 and 10 tap the stride-4 / stride-8 block and pool to the grid in the head's resize.

    Args:
        params: the model block (alpha, stride, width for the context convs).
        size: input side in pixels.
    Returns:
        Model (B, size, size, 1) -> (B, ~size/stride, ~size/stride, 2 * width).
    """
    net = keras.applications.MobileNetV2(
        input_shape=(size, size, 1), alpha=params.alpha, include_top=False, weights=None
    )
    x = net.get_layer(MOBILENET_TAPS[params.stride]).output
    x = _context(x, 2 * params.width, params.dilations, params.activation)
    return keras.Model(net.input, x, name=BACKBONE_NAME)


BACKBONES = {"mnist_cnn": mnist_cnn_backbone, "mobilenetv2": mobilenetv2_backbone}


def build_backbone(params: ModelParams, size: int = CANVAS_SIZE) -> keras.Model:
    """The backbone named by `params.backbone` for `size` x `size` inputs.

    Its weights do not depend on `size`: `pretrain` builds it at 28 px, the detector at 100 px.
    """
    return BACKBONES[params.backbone](params, size)


def build_detector(params: ModelParams) -> keras.Model:
    """The training model.

    Args:
        params: the model block.
    Returns:
        Model (B, 100, 100, 1) float32 in [0, 1] -> (B, G, G, A, 15) raw logits.
    """
    g, a = boxes.grid_size(params.stride), params.boxes_per_cell
    inputs = keras.Input((CANVAS_SIZE, CANVAS_SIZE, 1), name="image")
    x = build_backbone(params)(inputs)
    if x.shape[1] != g:  # strides 5 and 10 on MobileNetV2: resample the tapped map onto the grid
        x = layers.Resizing(g, g, interpolation="bilinear", name="to_grid")(x)
    head = params.head_width or 2 * params.width
    x = _conv_bn(x, head, kernel=1, name="head", activation=params.activation)
    # Small initial weights: every slot starts as an anchor-sized box mid-cell with flat class scores.
    # Glorot init gave an initial box loss of ~80 per canvas whose gradients wiped out the pretrained
    # class features (class loss stuck at ln 10 through a whole stage-1 epoch).
    init = keras.initializers.RandomNormal(stddev=0.01)
    # float32 under a mixed policy too (multidigit/precision.py): box logits need more than bfloat16's
    # 8-bit mantissa to place an edge to a tenth of a pixel.
    x = layers.Conv2D(a * boxes.RAW_CHANNELS, 1, kernel_initializer=init, name="predict", dtype="float32")(x)
    raw = layers.Reshape((g, g, a, boxes.RAW_CHANNELS), name="raw", dtype="float32")(x)
    detector = keras.Model(inputs, raw, name="detector")
    _init_prior(detector.get_layer("predict"), a)
    return detector


def _init_prior(predict: layers.Conv2D, boxes_per_cell: int) -> None:
    """Start objectness at OBJECT_PRIOR so hundreds of empty cells do not swamp the first steps."""
    bias = np.zeros((boxes_per_cell, boxes.RAW_CHANNELS), np.float32)
    bias[:, 0] = np.log(OBJECT_PRIOR / (1.0 - OBJECT_PRIOR))
    predict.bias.assign(bias.reshape(-1))


@keras.saving.register_keras_serializable(package="multidigit")
class DecodeGrid(layers.Layer):
    """(B, G, G, A, 15) raw logits -> (B, G*G*A, 15) decoded boxes and probabilities (boxes.decode_raw)."""

    def __init__(self, stride: int, boxes_per_cell: int, peaks: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.stride, self.boxes_per_cell, self.peaks = stride, boxes_per_cell, peaks

    def call(self, raw):
        return boxes.decode_raw(raw, self.stride, self.boxes_per_cell, self.peaks)

    def get_config(self) -> dict:
        config = {"stride": self.stride, "boxes_per_cell": self.boxes_per_cell, "peaks": self.peaks}
        return {**super().get_config(), **config}


def grid_of(detector: keras.Model) -> tuple[int, int]:
    """(stride, boxes_per_cell) read back from a detector's raw output shape (B, G, G, A, 15)."""
    _, g, _, a, _ = detector.output.shape
    return CANVAS_SIZE // g, a


def inference_model(detector: keras.Model, peaks: bool = False) -> keras.Model:
    """Wrap a training detector so it outputs the contract (B, N, 15) decoded tensor.

    Args:
        detector: the model `build_detector` returns (or one loaded from detector.keras).
        peaks: keep objectness only at its local maxima (`nms.peaks`).
    Returns:
        Model (B, 100, 100, 1) -> (B, G*G*A, 15) [x, y, w, h pixels top-left, objectness, 10 class probs].
    """
    stride, per_cell = grid_of(detector)
    decoded = DecodeGrid(stride, per_cell, peaks, name="decode")(detector.output)
    return keras.Model(detector.input, decoded, name="detector_inference")


def classifier(backbone: keras.Model) -> keras.Model:
    """The `pretrain` model: backbone -> features of the central cell(s) -> softmax over the 10 digits.

    The detector reads a digit's class at the cell holding its centre, so pretraining classifies from the
    centre cell of a digit padded onto black (global pooling over a bare 28 px digit trained features
    that a centre cell on a canvas could not use: 38% nearest-mean accuracy there).
    """
    inputs = keras.Input(backbone.input.shape[1:], name="digit")
    features = backbone(inputs)
    g = features.shape[1]
    crop = (g - (2 - g % 2)) // 2  # keep the central 2 x 2 (even grid) or 1 x 1 (odd grid) cells
    x = layers.Cropping2D(crop, name="centre")(features)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", name="digit_class", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="digit_classifier")


def count_macs(model: keras.Model) -> int:
    """Multiply-adds of one forward pass, counted over Conv2D, DepthwiseConv2D and Dense layers."""
    total = 0
    for layer in _flat_layers(model):
        if isinstance(layer, layers.DepthwiseConv2D):
            kh, kw = layer.kernel_size
            total += _spatial(layer) * kh * kw * layer.output.shape[-1]
        elif isinstance(layer, layers.Conv2D):
            kh, kw = layer.kernel_size
            total += _spatial(layer) * kh * kw * layer.input.shape[-1] * layer.filters
        elif isinstance(layer, layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return int(total)


def _spatial(layer) -> int:
    return int(layer.output.shape[1]) * int(layer.output.shape[2])


def _flat_layers(model: keras.Model) -> list:
    out = []
    for layer in model.layers:
        out.extend(_flat_layers(layer) if isinstance(layer, keras.Model) else [layer])
    return out
