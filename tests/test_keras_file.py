"""A saved .keras file depends on the model alone: DVC keeps its hash when a rerun trains the same weights."""

from __future__ import annotations

import json
import zipfile

import numpy as np

from multidigit.params import ModelParams


def _detector(seed: int):
    import keras

    from multidigit.model import build_detector

    keras.utils.set_random_seed(seed)
    return build_detector(ModelParams(width=8))


def test_same_model_saved_twice_gives_the_same_bytes(tmp_path):
    from multidigit.keras_file import SAVED, save_keras

    first, second = _detector(3), _detector(3)  # equal weights, different Python objects (and ids)
    save_keras(first, tmp_path / "a.keras")
    first.save(tmp_path / "plain.keras")  # Keras's own file: date, entry times and object ids of this save
    save_keras(second, tmp_path / "b.keras")
    assert (tmp_path / "a.keras").read_bytes() == (tmp_path / "b.keras").read_bytes()
    with zipfile.ZipFile(tmp_path / "a.keras") as steady, zipfile.ZipFile(tmp_path / "plain.keras") as plain:
        assert steady.namelist() == plain.namelist()
        assert {info.date_time for info in steady.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert steady.read("model.weights.h5") == plain.read("model.weights.h5")
        assert json.loads(steady.read("metadata.json"))["date_saved"] == SAVED
        config = json.loads(steady.read("config.json"))
    assert '"shared_object_id": 1' in json.dumps(config)  # renumbered from id()s
    save_keras(_detector(4), tmp_path / "c.keras")
    assert (tmp_path / "c.keras").read_bytes() != (tmp_path / "a.keras").read_bytes()  # weights still count


def test_steady_file_loads_and_predicts_as_saved(tmp_path):
    from multidigit.keras_file import save_keras
    from multidigit.model import inference_model
    from multidigit.predict import load_detector, predict_decoded

    detector = _detector(5)
    save_keras(detector, tmp_path / "detector.keras")
    images = np.random.default_rng(2).integers(0, 256, (3, 100, 100), dtype=np.uint8)
    expected = np.asarray(inference_model(detector)(images[..., None].astype(np.float32) / 255.0))
    loaded = load_detector(tmp_path / "detector.keras")
    np.testing.assert_allclose(predict_decoded(loaded, images, batch_size=3), expected, atol=1e-6)
    import keras

    reloaded = keras.saving.load_model(tmp_path / "detector.keras", compile=False)
    assert [layer.name for layer in reloaded.layers] == [layer.name for layer in detector.layers]
    for got, want in zip(reloaded.get_weights(), detector.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
