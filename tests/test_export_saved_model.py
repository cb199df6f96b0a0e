"""keras_attn.export.to_saved_model: dynamic-batch serving signature, reload, atomic writes."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attn.export import to_saved_model

pytestmark = pytest.mark.tf_only


@pytest.fixture(scope="module")
def model():
    inputs = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization(epsilon=1e-5)(x)
    x = x * keras.ops.sigmoid(keras.ops.mean(x, axis=(1, 2), keepdims=True))
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4)(x))
    bn = model.layers[2]
    bn.moving_variance.assign(np.linspace(0.5, 2.0, 8).astype("float32"))
    return model


def test_reload_serves_same_outputs_any_batch(model, tmp_path):
    path = to_saved_model(model, tmp_path / "served")
    assert path == str(tmp_path / "served")
    loaded = tf.saved_model.load(path)
    serving = loaded.signatures["serving_default"]
    rng = np.random.default_rng(0)
    for batch in (1, 5):
        x = rng.normal(size=(batch, 10, 10, 3)).astype("float32")
        expected = model.predict(x, verbose=0)
        np.testing.assert_allclose(loaded.serve(x).numpy(), expected, atol=1e-5)
        (served,) = serving(tf.constant(x)).values()
        np.testing.assert_allclose(served.numpy(), expected, atol=1e-5)
    (spec,) = serving.structured_input_signature[1].values()
    assert spec.shape.as_list() == [None, 10, 10, 3]
    assert sorted(os.listdir(tmp_path)) == ["served"]


def test_replaces_existing_export(model, tmp_path):
    target = tmp_path / "served"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    to_saved_model(model, target)
    assert not (target / "stale.txt").exists()
    assert (target / "saved_model.pb").exists()
    assert sorted(os.listdir(tmp_path)) == ["served"]


def test_creates_parent_folders(model, tmp_path):
    path = to_saved_model(model, tmp_path / "serving" / "cnn" / "1")
    assert (tmp_path / "serving" / "cnn" / "1" / "saved_model.pb").exists()
    assert os.listdir(tmp_path / "serving" / "cnn") == ["1"]
    assert path == str(tmp_path / "serving" / "cnn" / "1")


def test_failed_export_removes_the_folders_it_created(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(TypeError, match=r"Unsupported x=not a spec"):
        to_saved_model(model, tmp_path / "serving" / "1", input_signature=["not a spec"])
    assert os.listdir(tmp_path) == []


def test_stale_partial_of_the_same_target_is_removed(model, tmp_path):
    stale = tmp_path / ".served.999999999.k2j4_x9q.partial"
    other = tmp_path / ".other.999999999.k2j4_x9q.partial"
    running = tmp_path / f".served.{os.getpid()}.k2j4_x9q.partial"  # a live export: kept
    for folder in (stale, other, running):
        folder.mkdir()
    to_saved_model(model, tmp_path / "served")
    assert sorted(os.listdir(tmp_path)) == sorted([other.name, running.name, "served"])


def test_unbuilt_model(tmp_path):
    with pytest.raises(ValueError, match=r"`model` is not built"):
        to_saved_model(keras.Sequential([keras.layers.Dense(2)]), tmp_path / "s")


def test_not_a_model(tmp_path):
    with pytest.raises(TypeError, match=r"`model` must be a keras.Model; got str"):
        to_saved_model("model.keras", tmp_path / "s")
