"""Every attention layer, alone and inside a small CNN, converts to TFLite builtins and runs in
LiteRT: float32 within 1e-4 of Keras, float16 within 1e-2, int8 with cosine similarity >= 0.99
on held-out inputs, and XNNPACK takes each float and int8 model whole (one partition)."""

import keras
import numpy as np
import pytest

import keras_attn
from keras_attn.export import LiteRTModel, read_tflite, to_tflite

pytestmark = pytest.mark.tf_only

LAYERS = {
    "ChannelAttention": lambda: keras_attn.ChannelAttention(reduction_ratio=4),
    "SpatialAttention": lambda: keras_attn.SpatialAttention(),
    "CBAM": lambda: keras_attn.CBAM(reduction_ratio=4),
    "BAMChannelGate": lambda: keras_attn.BAMChannelGate(reduction_ratio=4),
    "BAMSpatialGate": lambda: keras_attn.BAMSpatialGate(reduction_ratio=4),
    "BAM": lambda: keras_attn.BAM(reduction_ratio=4),
    "SqueezeExcite": lambda: keras_attn.SqueezeExcite(reduction_ratio=4),
    "SelectiveKernel": lambda: keras_attn.SelectiveKernel(reduction_ratio=4, min_units=8),
    "ECA": lambda: keras_attn.ECA(),
}
DILATED = {"BAMSpatialGate", "BAM", "SelectiveKernel"}

# Op types the models above convert to, all of which LiteRT 2.3's XNNPACK delegate takes in
# float32 (DEQUANTIZE: float16 weights unpacked at load) and in int8 (QUANTIZE and DEQUANTIZE:
# the float input and output of an int8 model).
XNNPACK_OPS = {
    "ADD", "SUB", "MUL", "CONV_2D", "FULLY_CONNECTED", "MEAN", "REDUCE_MAX", "LOGISTIC",
    "CONCATENATION", "RESHAPE",
}
XNNPACK_FLOAT16_OPS = XNNPACK_OPS | {"DEQUANTIZE"}
XNNPACK_INT8_OPS = XNNPACK_OPS | {"QUANTIZE", "DEQUANTIZE"}

FEATURES = (8, 8, 16)
IMAGES = (16, 16, 3)
CALIBRATION, HELD_OUT = 64, 16


def cosine(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def randomize(model, seed):
    """Trained-looking weights: distinct kernels, non-zero biases, non-trivial BN statistics."""
    rng = np.random.default_rng(seed)
    for v in model.variables:
        shape, name = tuple(v.shape), v.path.rsplit("/", 1)[-1]
        if name == "kernel":
            value = rng.normal(0, 1 / np.sqrt(np.prod(shape[:-1])), shape)
        elif name in ("bias", "beta", "moving_mean"):
            value = rng.normal(0, 0.1, shape)
        elif name in ("gamma", "moving_variance"):
            value = rng.uniform(0.5, 1.5, shape)
        else:
            continue
        v.assign(value.astype("float32"))


def build(name, context):
    if context == "alone":
        inputs = keras.Input(FEATURES)
        outputs = LAYERS[name]()(inputs)
    else:
        inputs = keras.Input(IMAGES)
        x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
        x = LAYERS[name]()(x)
        x = keras.layers.Conv2D(8, 1, activation="relu")(x)
        outputs = keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    randomize(model, seed=len(name))
    rng = np.random.default_rng(0)
    if context == "alone":  # post-ReLU-like feature maps
        data = np.abs(rng.normal(0, 1, (CALIBRATION + HELD_OUT,) + FEATURES))
    else:
        data = rng.uniform(0, 1, (CALIBRATION + HELD_OUT,) + IMAGES)
    data = data.astype("float32")
    return model, data, model.predict(data[CALIBRATION:], verbose=0)


@pytest.fixture(scope="module", params=[(n, c) for n in LAYERS for c in ("alone", "cnn")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def case(request):
    return build(*request.param)


def check_xnnpack(path, allowed):
    ops = set(read_tflite(path).op_counts())
    assert ops <= allowed, f"ops XNNPACK may not take: {ops - allowed}"
    runner = LiteRTModel(path)
    assert runner.fully_delegated(), f"{runner.delegate_partitions} XNNPACK partitions"
    return runner


def test_float32(case, tmp_path):
    model, data, expected = case
    report = to_tflite(model, tmp_path / "f32.tflite")
    assert "SPACE_TO_BATCH_ND" not in report.op_counts  # dilated convs stay one CONV_2D
    runner = check_xnnpack(report.path, XNNPACK_OPS)
    np.testing.assert_allclose(runner(data[CALIBRATION:]), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", LAYERS)
def test_float16_in_cnn(name, tmp_path):
    model, data, expected = build(name, "cnn")
    report = to_tflite(model, tmp_path / "f16.tflite", "float16")
    runner = check_xnnpack(report.path, XNNPACK_FLOAT16_OPS)
    np.testing.assert_allclose(runner(data[CALIBRATION:]), expected, atol=1e-2)


@pytest.mark.slow
def test_int8(case, tmp_path):
    model, data, expected = case
    report = to_tflite(
        model, tmp_path / "int8.tflite", "int8", representative_data=data[:CALIBRATION]
    )
    for op in read_tflite(report.path).ops:  # no float islands around the gates
        if op.name not in ("QUANTIZE", "DEQUANTIZE"):
            assert set(op.input_types + op.output_types) <= {"INT8", "INT32"}, op
    runner = check_xnnpack(report.path, XNNPACK_INT8_OPS)
    assert cosine(runner(data[CALIBRATION:]), expected) >= 0.99


@pytest.mark.parametrize("name", LAYERS)
def test_dynamic_height_width(name, tmp_path):
    """(None, None, C) inputs: builtin ops only, LiteRT resizes per call. Dilated convolutions
    then need SPACE_TO_BATCH_ND and shape arithmetic, which XNNPACK leaves to LiteRT; exporting
    the same model at the size it will run at gives native dilated convolutions again."""
    import tensorflow as tf

    inputs = keras.Input((None, None, FEATURES[-1]))
    model = keras.Model(inputs, LAYERS[name]()(inputs))
    randomize(model, seed=1)
    report = to_tflite(model, tmp_path / "hw.tflite")
    runner = LiteRTModel(report.path)
    rng = np.random.default_rng(2)
    for shape in ((2, 9, 7), (1, 12, 16)):
        x = np.abs(rng.normal(size=shape + FEATURES[-1:])).astype("float32")
        np.testing.assert_allclose(runner(x), model.predict(x, verbose=0), atol=1e-4, rtol=1e-4)
    if name not in DILATED:
        assert runner.fully_delegated()
        return
    assert "SPACE_TO_BATCH_ND" in report.op_counts
    assert runner.delegate_partitions > 1
    signature = [tf.TensorSpec((1,) + FEATURES, tf.float32)]
    fixed = to_tflite(model, tmp_path / "fixed.tflite", input_signature=signature)
    runner = check_xnnpack(fixed.path, XNNPACK_OPS)
    x = np.abs(rng.normal(size=(3,) + FEATURES)).astype("float32")
    np.testing.assert_allclose(runner(x), model.predict(x, verbose=0), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_lp_and_lse_pools_convert_but_leave_ops_to_litert(tmp_path):
    """The non-default "lp" and "lse" channel pools convert to builtins and stay accurate, but
    int8 keeps SQUARE in float and XNNPACK takes neither it nor EXP / LOG: several partitions."""
    inputs = keras.Input(FEATURES)
    layer = keras_attn.ChannelAttention(reduction_ratio=4, pool_types=("avg", "max", "lp", "lse"))
    model = keras.Model(inputs, layer(inputs))
    randomize(model, seed=5)
    data = np.abs(np.random.default_rng(6).normal(size=(80,) + FEATURES)).astype("float32")
    expected = model.predict(data[CALIBRATION:], verbose=0)
    f32 = LiteRTModel(to_tflite(model, tmp_path / "f32.tflite").path)
    assert f32.fully_delegated()
    np.testing.assert_allclose(f32(data[CALIBRATION:]), expected, atol=1e-4, rtol=1e-4)
    report = to_tflite(model, tmp_path / "int8.tflite", "int8", data[:CALIBRATION])
    assert {"SQUARE", "EXP", "LOG"} <= set(report.op_counts)
    int8 = LiteRTModel(report.path)
    assert int8.delegate_partitions > 1
    assert cosine(int8(data[CALIBRATION:]), expected) >= 0.99
