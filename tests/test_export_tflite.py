"""keras_attn.export.to_tflite on plain Keras CNNs: quantization modes, op checks, bad input."""

import os
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attn.export import LiteRTModel, read_tflite, to_tflite

pytestmark = pytest.mark.tf_only

SHAPE = (12, 12, 3)


def cosine(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def gated_cnn(batch_norm_stats_seed=0):
    """Conv, BN, a dilated conv and a max-over-channels sigmoid gate: what attention blocks use."""
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.BatchNormalization(epsilon=1e-5)(x)
    y = keras.layers.Conv2D(8, 3, padding="same", dilation_rate=2)(x)
    x = y * keras.ops.sigmoid(keras.ops.max(y, axis=-1, keepdims=True))
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    rng = np.random.default_rng(batch_norm_stats_seed)
    bn = model.layers[2]
    bn.moving_mean.assign(rng.normal(0, 0.1, 32).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.5, 1.5, 32).astype("float32"))
    return model


def matrix_inverse_model():
    class Inverse(keras.layers.Layer):
        def call(self, x):
            return tf.linalg.inv(x)  # no TFLite builtin: needs the Flex delegate

    inputs = keras.Input((4, 4))
    return keras.Model(inputs, Inverse()(inputs))


@pytest.fixture(scope="module")
def model():
    return gated_cnn()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    return rng.uniform(0, 1, (48,) + SHAPE).astype("float32")


def test_float32_matches_keras_with_native_dilated_conv(model, data, tmp_path):
    report = to_tflite(model, tmp_path / "f32.tflite")
    graph = read_tflite(report.path)
    assert report.path == str(tmp_path / "f32.tflite")
    assert report.size_bytes == os.path.getsize(report.path)
    assert report.op_counts == graph.op_counts()
    assert report.quantization is None
    assert (report.input_dtypes, report.output_dtypes) == (("float32",), ("float32",))
    assert graph.custom_ops() == []
    # Fixed batch: the dilated Conv2D becomes one CONV_2D with dilation, not the
    # SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND sandwich that XNNPACK does not take.
    assert report.op_counts["CONV_2D"] == 2
    assert "SPACE_TO_BATCH_ND" not in report.op_counts
    runner = LiteRTModel(report.path)
    np.testing.assert_allclose(runner(data[:5]), model.predict(data[:5], verbose=0), atol=1e-4)
    assert runner.fully_delegated()
    assert sorted(os.listdir(tmp_path)) == ["f32.tflite"]  # no temporary left over


def test_dynamic_batch_splits_dilated_conv(model, data, tmp_path):
    report = to_tflite(model, tmp_path / "dyn.tflite", batch_size=None)
    assert {"SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND"} <= set(report.op_counts)
    runner = LiteRTModel(report.path)
    np.testing.assert_allclose(runner(data[:3]), model.predict(data[:3], verbose=0), atol=1e-4)
    assert runner.delegate_partitions > 1  # why batch_size=1 is the default


def test_float16_weights(model, data, tmp_path):
    report = to_tflite(model, tmp_path / "f16.tflite", "float16")
    assert report.op_counts["DEQUANTIZE"] >= 4  # float16 kernels and biases, unpacked at load
    runner = LiteRTModel(report.path)
    np.testing.assert_allclose(runner(data[:8]), model.predict(data[:8], verbose=0), atol=1e-2)
    assert runner.fully_delegated()


def test_dynamic_range_quantizes_weights(model, data, tmp_path):
    float_size = to_tflite(model, tmp_path / "f32.tflite").size_bytes
    report = to_tflite(model, tmp_path / "dyn.tflite", "dynamic")
    assert report.size_bytes < float_size  # the 3x3x3x32 kernel is stored as int8
    expected = model.predict(data[:8], verbose=0)
    assert cosine(LiteRTModel(report.path)(data[:8]), expected) > 0.99


@pytest.mark.slow
@pytest.mark.parametrize("io_dtype", ["float32", "int8"])
def test_int8_full_integer(model, data, tmp_path, io_dtype):
    report = to_tflite(
        model, tmp_path / "int8.tflite", "int8", representative_data=data[:32], io_dtype=io_dtype
    )
    assert report.input_dtypes == report.output_dtypes == (io_dtype,)
    for op in read_tflite(report.path).ops:
        if op.name in ("QUANTIZE", "DEQUANTIZE"):  # the float I/O boundary only
            continue
        assert set(op.input_types + op.output_types) <= {"INT8", "INT32"}, op
    runner = LiteRTModel(report.path)
    held_out = data[32:]
    assert cosine(runner(held_out), model.predict(held_out, verbose=0)) >= 0.99
    assert runner.fully_delegated()


@pytest.mark.slow
def test_int8_dead_relu_units_still_run_in_xnnpack(tmp_path):
    """A ReLU that never fires calibrates to an empty range, which XNNPACK refuses to load."""
    inputs = keras.Input((8,))
    dead = keras.layers.Dense(4, "relu", bias_initializer=keras.initializers.Constant(-100.0))
    bias = keras.initializers.Constant([0.5, -0.25, 1.0])
    model = keras.Model(inputs, keras.layers.Dense(3, bias_initializer=bias)(dead(inputs)))
    x = np.random.default_rng(0).uniform(0, 1, (40, 8)).astype("float32")
    report = to_tflite(model, tmp_path / "dead.tflite", "int8", representative_data=x[:32])
    runner = LiteRTModel(report.path)
    assert runner.fully_delegated()
    np.testing.assert_allclose(runner(x[32:]), model.predict(x[32:], verbose=0), atol=0.01)


def test_flex_op_is_refused_and_nothing_written(tmp_path):
    target = tmp_path / "inverse.tflite"
    target.write_bytes(b"previous export")
    with pytest.raises(ValueError, match=r"builtin ops only .*TF Select ops: MatrixInverse"):
        to_tflite(matrix_inverse_model(), target)
    assert target.read_bytes() == b"previous export"
    assert os.listdir(tmp_path) == ["inverse.tflite"]


def test_creates_parent_folders_and_keeps_scratch_files_beside_the_target(
    model, tmp_path, monkeypatch
):
    stale = tmp_path / "new" / "dir" / ".m.tflite.999999999.abcd_123.partial"
    stale.mkdir(parents=True)
    (stale / "saved_model.pb").write_bytes(b"left by a killed export")
    scratch = []
    real = tempfile.TemporaryDirectory

    def recording(*args, **kwargs):
        folder = real(*args, **kwargs)
        scratch.append(folder.name)
        return folder

    monkeypatch.setattr(tempfile, "TemporaryDirectory", recording)
    report = to_tflite(model, tmp_path / "new" / "dir" / "m.tflite")
    assert report.path == str(tmp_path / "new" / "dir" / "m.tflite")
    assert os.listdir(tmp_path / "new" / "dir") == ["m.tflite"]  # the stale folder is gone
    assert scratch and all(  # Keras' intermediate SavedModel went beside the target
        os.path.dirname(os.path.dirname(s)) == str(tmp_path / "new" / "dir") for s in scratch
    )


def test_failed_export_removes_the_folders_it_created(tmp_path):
    with pytest.raises(ValueError, match=r"TF Select ops: MatrixInverse"):
        to_tflite(matrix_inverse_model(), tmp_path / "a" / "b" / "inverse.tflite")
    assert os.listdir(tmp_path) == []


def test_existing_folder_as_target_names_it(model, tmp_path):
    (tmp_path / "m.tflite").mkdir()
    with pytest.raises(IsADirectoryError, match=r"`path` must be a file .*m\.tflite.* existing folder"):
        to_tflite(model, tmp_path / "m.tflite")
    assert os.listdir(tmp_path) == ["m.tflite"]


def test_parent_is_a_file(model, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"`path`: cannot create a folder .*is a file"):
        to_tflite(model, tmp_path / "file" / "m.tflite")


def test_int8_without_representative_data(model, tmp_path):
    with pytest.raises(ValueError, match=r"`representative_data` is required for quantization"):
        to_tflite(model, tmp_path / "m.tflite", "int8")
    assert os.listdir(tmp_path) == []


def test_unknown_quantization(model, tmp_path):
    with pytest.raises(ValueError, match=r"`quantization` must be one of .*got 'int4'"):
        to_tflite(model, tmp_path / "m.tflite", "int4")


def test_representative_data_without_int8(model, data, tmp_path):
    with pytest.raises(ValueError, match=r"only used with quantization='int8'; got .*'float16'"):
        to_tflite(model, tmp_path / "m.tflite", "float16", representative_data=data)


def test_representative_data_shape(model, tmp_path):
    with pytest.raises(ValueError, match=r"shape \(num_samples, 12, 12, 3\); got \(4, 12, 12\)"):
        to_tflite(model, tmp_path / "m.tflite", "int8", np.zeros((4, 12, 12), "float32"))


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_representative_data_non_finite_names_the_sample(model, tmp_path, bad):
    data = np.zeros((6,) + SHAPE, "float32")
    data[4, 1, 2, 0] = bad
    data[5] = bad
    kind = {np.inf: "inf", -np.inf: "-inf"}.get(bad, "NaN")
    with pytest.raises(ValueError, match=rf"`representative_data`: sample 4 holds {kind} \(1 of 432"):
        to_tflite(model, tmp_path / "m.tflite", "int8", data)
    assert os.listdir(tmp_path) == []


def test_representative_data_empty_or_not_real(model, tmp_path):
    with pytest.raises(ValueError, match=r"`representative_data` is empty \(shape \(0, 12, 12, 3\)"):
        to_tflite(model, tmp_path / "m.tflite", "int8", np.zeros((0,) + SHAPE, "float32"))
    with pytest.raises(ValueError, match=r"must hold real numbers .*got dtype complex64"):
        to_tflite(model, tmp_path / "m.tflite", "int8", np.zeros((2,) + SHAPE, "complex64"))
    with pytest.raises(ValueError, match=r"must hold real numbers .*got dtype <U1"):
        to_tflite(model, tmp_path / "m.tflite", "int8", np.full((2,) + SHAPE, "a"))


def test_representative_data_count(model, tmp_path):
    with pytest.raises(ValueError, match=r"one array per model input \(1\); got 2"):
        to_tflite(model, tmp_path / "m.tflite", "int8", [np.zeros((4,) + SHAPE)] * 2)


def test_io_dtype(model, data, tmp_path):
    with pytest.raises(ValueError, match=r"`io_dtype` must be one of .*got 'uint8'"):
        to_tflite(model, tmp_path / "m.tflite", "int8", data, io_dtype="uint8")
    with pytest.raises(ValueError, match=r"`io_dtype='int8'` needs quantization='int8'"):
        to_tflite(model, tmp_path / "m.tflite", io_dtype="int8")


def test_batch_size(model, tmp_path):
    with pytest.raises(ValueError, match=r"`batch_size` must be a positive int or None; got 0"):
        to_tflite(model, tmp_path / "m.tflite", batch_size=0)


def test_not_a_model(tmp_path):
    with pytest.raises(TypeError, match=r"`model` must be a keras.Model; got Dense"):
        to_tflite(keras.layers.Dense(2), tmp_path / "m.tflite")


@pytest.mark.slow
def test_int8_report_compares_with_keras(model, data, tmp_path):
    labels = np.arange(16) % 3
    report = to_tflite(model, tmp_path / "int8.tflite", "int8", representative_data=data[:32],
                       validation_data=(data[32:], labels))
    got, expected = LiteRTModel(report.path)(data[32:]), model.predict(data[32:], verbose=0)
    agreement = report.agreement
    assert (agreement.samples, agreement.on_calibration_data) == (16, False)
    assert agreement.cosine == pytest.approx(cosine(got, expected), abs=1e-6)  # float32 sums
    assert agreement.top1_agreement == np.mean(got.argmax(1) == expected.argmax(1))
    assert agreement.litert_accuracy == np.mean(got.argmax(1) == labels)
    assert agreement.keras_accuracy == np.mean(expected.argmax(1) == labels)
    assert f"cosine {agreement.cosine:.4f}" in str(report)
    # Without validation data: the first 32 calibration samples.
    default = to_tflite(model, tmp_path / "d.tflite", "int8", representative_data=data[:40])
    assert (default.agreement.samples, default.agreement.on_calibration_data) == (32, True)
    assert default.agreement.keras_accuracy is None
    assert to_tflite(model, tmp_path / "f32.tflite").agreement is None


def test_bad_validation_data(model, data, tmp_path):
    with pytest.raises(ValueError, match="`validation_data`: 3 labels for 8 samples"):
        to_tflite(model, tmp_path / "a.tflite", validation_data=(data[:8], [0, 1, 2]))
    with pytest.raises(TypeError, match="labels must be integer class indices"):
        to_tflite(model, tmp_path / "b.tflite", validation_data=(data[:8], np.zeros(8)))
    with pytest.raises(ValueError, match=r"`validation_data` must have shape \(num_samples, 12"):
        to_tflite(model, tmp_path / "c.tflite", validation_data=data[:8, :6])
    assert os.listdir(tmp_path) == []
