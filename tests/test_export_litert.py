"""keras_attn.export.LiteRTModel: batching, dynamic shapes, int8 I/O, delegation, bad input."""

import keras
import numpy as np
import pytest

from keras_attn.export import LiteRTModel, to_tflite

pytestmark = pytest.mark.tf_only


def conv_model(shape):
    inputs = keras.Input(shape)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = x * keras.ops.sigmoid(keras.ops.mean(x, axis=-1, keepdims=True))
    return keras.Model(inputs, x)


@pytest.fixture(scope="module")
def model():
    return conv_model((6, 6, 2))


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(0).normal(size=(5, 6, 6, 2)).astype("float32")


def test_fixed_batch_runs_in_padded_chunks(model, data, tmp_path):
    path = to_tflite(model, tmp_path / "b2.tflite", batch_size=2).path
    runner = LiteRTModel(path)
    assert list(runner.input_details[0]["shape_signature"]) == [2, 6, 6, 2]
    out = runner(data)  # 5 samples: chunks of 2, 2 and 1 padded to 2
    np.testing.assert_allclose(out, model.predict(data, verbose=0), atol=1e-5)
    assert out.shape == (5, 6, 6, 4)


def test_without_xnnpack_same_outputs(model, data, tmp_path):
    path = to_tflite(model, tmp_path / "m.tflite").path
    with_xnnpack, reference = LiteRTModel(path), LiteRTModel(path, use_xnnpack=False)
    assert with_xnnpack.delegate_partitions == 1 and with_xnnpack.fully_delegated()
    assert reference.delegate_partitions == 0 and not reference.fully_delegated()
    np.testing.assert_allclose(with_xnnpack(data), reference(data), atol=1e-5)


def test_dynamic_height_width_resized_per_call(tmp_path):
    model = conv_model((None, None, 2))
    path = to_tflite(model, tmp_path / "hw.tflite").path
    runner = LiteRTModel(path)
    assert list(runner.input_details[0]["shape_signature"]) == [1, -1, -1, 2]
    rng = np.random.default_rng(1)
    for shape in ((2, 5, 7, 2), (1, 9, 4, 2)):
        x = rng.normal(size=shape).astype("float32")
        np.testing.assert_allclose(runner(x), model.predict(x, verbose=0), atol=1e-5)


def test_int8_io_quantized_for_the_caller(model, data, tmp_path):
    path = to_tflite(model, tmp_path / "q.tflite", "int8", data, io_dtype="int8").path
    runner = LiteRTModel(path)
    assert runner.input_details[0]["dtype"] == np.int8
    out = runner(data)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, model.predict(data, verbose=0), atol=0.1)
    # NaN has no int8 value: it is quantized as 0.0; infinities saturate like large values.
    odd = data[:2].copy()
    odd[0] = np.nan
    odd[1, :3] = np.inf
    expected = data[:2].copy()
    expected[0] = 0.0
    expected[1, :3] = 1e9
    with np.errstate(invalid="raise"):
        np.testing.assert_array_equal(runner(odd), runner(expected))


def test_wrong_input_shape(model, data, tmp_path):
    runner = LiteRTModel(to_tflite(model, tmp_path / "m.tflite").path)
    expected = r"shape \(1, 6, 6, 2\) with any batch size; got \(5, 6, 2\)"
    with pytest.raises(ValueError, match=expected):
        runner(data[:, 0])


def test_wrong_input_count(model, data, tmp_path):
    runner = LiteRTModel(to_tflite(model, tmp_path / "m.tflite").path)
    expected = r"`inputs` must hold 1 array\(s\), one per model input; got 2"
    with pytest.raises(ValueError, match=expected):
        runner([data, data])


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"`path`: no .tflite file at"):
        LiteRTModel(tmp_path / "absent.tflite")
