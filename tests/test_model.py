"""multidigit/model.py and predict.py: both backbones build, output shapes, decoding, save/load."""

from __future__ import annotations

import numpy as np
import pytest

from multidigit.params import ModelParams, NmsParams


@pytest.mark.parametrize(
    ("kw", "grid", "slots"),
    [
        ({"backbone": "mnist_cnn", "width": 8}, 25, 1),
        ({"backbone": "mnist_cnn", "width": 8, "stride": 10, "boxes_per_cell": 2}, 10, 2),
        ({"backbone": "mobilenetv2", "alpha": 0.35, "width": 8}, 25, 1),
        ({"backbone": "mobilenetv2", "alpha": 0.35, "width": 8, "stride": 10}, 10, 1),
    ],
)
def test_detector_shapes(kw, grid, slots):
    from multidigit.model import build_detector, count_macs, inference_model

    detector = build_detector(ModelParams(**kw))
    assert tuple(detector.output.shape) == (None, grid, grid, slots, 15)
    infer = inference_model(detector)
    out = np.asarray(infer(np.random.default_rng(0).random((2, 100, 100, 1), np.float32)))
    assert out.shape == (2, grid * grid * slots, 15)
    probs = out[..., 5:]
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-4)
    assert ((out[..., 4] > 0) & (out[..., 4] < 1)).all()
    # objectness starts near the prior, so the first steps are not swamped by empty cells
    assert out[..., 4].mean() < 0.1
    assert count_macs(detector) > 0


@pytest.mark.parametrize("backbone", ["mnist_cnn", "mobilenetv2"])
def test_activation_is_silu_in_every_block_the_param_names(backbone):
    from multidigit.model import build_detector

    relu6, silu = (ModelParams(backbone=backbone, width=8, activation=a) for a in ("relu6", "silu"))
    relu6, silu = build_detector(relu6), build_detector(silu)
    names = [layer.name for model in (silu.get_layer("backbone"), silu) for layer in model.layers]
    ours = [n for n in names if n.startswith(("down", "context", "head"))]  # MobileNetV2 keeps its own ReLU6
    assert {"head_silu", "context0_silu"} <= set(ours) and not any(n.endswith("_relu") for n in ours)
    assert relu6.count_params() == silu.count_params()  # the activation adds no weights


def test_head_width_sets_the_heads_filters_and_defaults_to_twice_the_width():
    from multidigit.model import build_detector

    default, wide = (build_detector(ModelParams(width=8, head_width=w)) for w in (None, 40))
    assert default.get_layer("head_conv").filters == 16 and wide.get_layer("head_conv").filters == 40
    assert tuple(wide.output.shape) == tuple(default.output.shape)


def test_fine_convs_read_the_half_resolution_map_before_the_grid():
    from multidigit.model import BACKBONE_NAME, build_detector

    for n in (0, 2):
        backbone = build_detector(ModelParams(width=8, fine_convs=n)).get_layer(BACKBONE_NAME)
        fine = [
            layer
            for layer in backbone.layers
            if layer.name.startswith("fine") and layer.name.endswith("conv")
        ]
        assert len(fine) == n
        for layer in fine:  # 3 x 3 at 50 x 50 with the stem's filters, feeding the second strided conv
            assert layer.kernel_size == (3, 3) and tuple(layer.output.shape) == (None, 50, 50, 4)
    order = [layer.name for layer in backbone.layers]
    assert order.index("down0_silu") < order.index("fine1_conv") < order.index("down1_conv")


def test_stem_filters_add_one_full_resolution_conv_before_the_first_strided_conv():
    from multidigit.model import BACKBONE_NAME, build_detector

    plain, stem = (build_detector(ModelParams(width=8, stem_filters=n)) for n in (0, 8))
    layers = {layer.name: layer for layer in stem.get_layer(BACKBONE_NAME).layers}
    assert layers["stem_conv"].kernel_size == (3, 3)
    assert tuple(layers["stem_conv"].output.shape) == (None, 100, 100, 8)
    assert layers["down0_conv"].input.shape[-1] == 8
    assert not any(layer.name.startswith("stem") for layer in plain.get_layer(BACKBONE_NAME).layers)
    assert tuple(stem.output.shape) == tuple(plain.output.shape)
    # 3 x 3 x 1 x 8 stem weights plus its BatchNorm, and down0 reads 8 channels instead of 1.
    down0 = plain.get_layer(BACKBONE_NAME).get_layer("down0_conv").count_params()
    assert stem.count_params() - plain.count_params() == 72 + 4 * 8 + 7 * down0


def test_backbone_weights_fit_any_input_size():
    from multidigit.model import BACKBONE_NAME, build_backbone, build_detector

    params = ModelParams(width=8)
    small = build_backbone(params, size=28)
    assert tuple(small.output.shape) == (None, 7, 7, 16)
    detector = build_detector(params)
    detector.get_layer(BACKBONE_NAME).set_weights(small.get_weights())


def test_default_model_size_is_near_budget():
    """The default detector stays in the measured budget (~80-100M MACs per canvas, < 250k params)."""
    from multidigit.model import build_detector, count_macs

    detector = build_detector(ModelParams())
    assert 50e6 < count_macs(detector) < 110e6
    assert detector.count_params() < 250_000


def test_saved_detector_predicts_the_same(tmp_path):
    from multidigit.model import build_detector, inference_model
    from multidigit.predict import load_detector, predict_canvases, predict_decoded

    detector = build_detector(ModelParams(width=8))
    detector.save(tmp_path / "detector.keras")
    images = np.random.default_rng(1).integers(0, 256, (3, 100, 100), dtype=np.uint8)
    loaded = load_detector(tmp_path / "detector.keras")
    expected = np.asarray(inference_model(detector)(images[..., None].astype(np.float32) / 255.0))
    np.testing.assert_allclose(predict_decoded(loaded, images, batch_size=2), expected, atol=1e-5)
    dets = predict_canvases(loaded, images, NmsParams(), score_threshold=0.0)
    assert len(dets) == 3 and all(len(d["boxes"]) <= NmsParams().max_detections for d in dets)


def test_load_detector_missing_file(tmp_path):
    from multidigit.predict import load_detector

    with pytest.raises(FileNotFoundError, match=r"nothing\.keras"):
        load_detector(tmp_path / "nothing.keras")


def test_to_model_input_checks():
    from multidigit.preprocess import to_model_input

    x = to_model_input(np.full((2, 100, 100), 255, np.uint8))
    assert x.shape == (2, 100, 100, 1) and x.dtype == np.float32 and x.max() == 1.0
    assert to_model_input(np.zeros((100, 100), np.uint8)).shape == (1, 100, 100, 1)
    with pytest.raises(ValueError, match="dtype float64"):
        to_model_input(np.zeros((1, 100, 100)))
    with pytest.raises(ValueError, match=r"shape \(1, 28, 28\)"):
        to_model_input(np.zeros((1, 28, 28), np.uint8))
