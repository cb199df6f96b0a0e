"""int8 exports with builtin ops stay close to Keras: every attention layer inside
`Conv2D(16) -> layer -> GlobalAveragePooling2D -> Dense(5)`, with Keras' random weights and random
BatchNormalization statistics, on signed feature maps (no ReLU before the layer, as where a
ResNet block places its attention). Also: the int8-friendly forms `to_tflite` swaps in compute
what the layers compute."""

import keras
import numpy as np
import pytest

import keras_attn
from keras_attn.export import LiteRTModel, read_tflite, to_tflite
from keras_attn.export._int8_forms import int8_forms
from test_export_layers import XNNPACK_INT8_OPS, cosine

pytestmark = pytest.mark.tf_only

IMAGES = (16, 16, 3)
CALIBRATION, HELD_OUT = 64, 32
# Cosine of the int8 model's logits vs Keras on held-out images. The spatial gates were at
# about 0.5 when the feature map shared the scale of the gate's CONCATENATION.
FLOORS = {
    "ChannelAttention": (lambda: keras_attn.ChannelAttention(reduction_ratio=4), 0.995),
    "SpatialAttention": (lambda: keras_attn.SpatialAttention(), 0.995),
    "CBAM": (lambda: keras_attn.CBAM(reduction_ratio=4), 0.995),
    "SqueezeExcite": (lambda: keras_attn.SqueezeExcite(reduction_ratio=4), 0.995),
    "BAM": (lambda: keras_attn.BAM(reduction_ratio=4), 0.99),
    "ECA": (lambda: keras_attn.ECA(), 0.995),
}


def randomize_batchnorm(model, rng):
    for v in model.variables:
        name = v.path.rsplit("/", 1)[-1]
        if name == "moving_mean":
            v.assign(rng.normal(0, 0.2, tuple(v.shape)).astype("float32"))
        elif name == "moving_variance":
            v.assign(rng.uniform(0.5, 2.0, tuple(v.shape)).astype("float32"))


def small_cnn(layer, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(IMAGES)
    x = keras.layers.Conv2D(16, 3, padding="same")(inputs)
    x = layer(x)
    model = keras.Model(inputs, keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(x)))
    rng = np.random.default_rng(seed)
    randomize_batchnorm(model, rng)
    images = rng.normal(0, 1, (CALIBRATION + HELD_OUT,) + IMAGES).astype("float32")
    return model, images


@pytest.mark.parametrize("name", FLOORS)
def test_int8_cosine_floor(name, tmp_path):
    make, floor = FLOORS[name]
    model, images = small_cnn(make())
    report = to_tflite(model, tmp_path / "int8.tflite", "int8", images[:CALIBRATION])
    assert set(report.op_counts) <= XNNPACK_INT8_OPS
    runner = LiteRTModel(report.path, num_threads=1)
    assert runner.fully_delegated()
    held_out = images[CALIBRATION:]
    assert cosine(runner(held_out), model.predict(held_out, verbose=0)) >= floor


def test_spatial_gate_ops(tmp_path):
    """The int8 gate: the channel max halved (a MUL) before the concatenation, BatchNorm folded
    into the convolution; one op more than the float gate, all int8."""
    model, images = small_cnn(keras_attn.SpatialAttention())
    f32 = to_tflite(model, tmp_path / "f32.tflite").op_counts
    int8 = to_tflite(model, tmp_path / "int8.tflite", "int8", images[:CALIBRATION]).op_counts
    assert int8["CONCATENATION"] == f32["CONCATENATION"] == 1
    assert int8["CONV_2D"] == f32["CONV_2D"] and int8["MUL"] == f32["MUL"] + 1
    assert sum(int8.values()) == sum(f32.values()) + 1 + 2  # + QUANTIZE and DEQUANTIZE
    for op in read_tflite(tmp_path / "int8.tflite").ops:
        if op.name not in ("QUANTIZE", "DEQUANTIZE"):
            assert set(op.input_types + op.output_types) <= {"INT8", "INT32"}, op


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("use_batchnorm", [True, False])
def test_int8_form_computes_the_layer(data_format, use_batchnorm):
    """The swapped-in form is the layer's own maths in another order (float32, atol 1e-5)."""
    rng = np.random.default_rng(3)
    inner = keras_attn.SpatialAttention(use_batchnorm=use_batchnorm, data_format=data_format)
    layer = keras_attn.CBAM(reduction_ratio=2, data_format=data_format)
    inputs = keras.Input((6, 9, 8) if data_format == "channels_last" else (8, 6, 9))
    model = keras.Model(inputs, inner(layer(inputs)))
    randomize_batchnorm(model, rng)
    for v in model.variables:
        if v.path.endswith("gamma") or v.path.endswith("beta"):
            v.assign(rng.uniform(0.5, 1.5, tuple(v.shape)).astype("float32"))
    x = rng.normal(0, 1, (2,) + tuple(inputs.shape[1:])).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    _, expected_gate = inner(x, training=False, return_attention_scores=True)
    with int8_forms(model) as swapped:
        assert swapped == 2  # the standalone gate and CBAM's
        got = keras.ops.convert_to_numpy(model(x, training=False))
        _, gate = inner(x, training=False, return_attention_scores=True)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(gate),
                               keras.ops.convert_to_numpy(expected_gate), atol=1e-5)
    assert "call" not in vars(inner) and "call" not in vars(layer.spatial_attention)


@pytest.mark.slow
def test_cbam_resnet50_int8_cosine(tmp_path):
    """A whole CBAM-ResNet-50 (attention on the signed maps before each residual add), at a
    small input size to keep the test short."""
    from keras_attn.models import resnet50

    keras.utils.set_random_seed(0)
    model = resnet50(attention="cbam", input_shape=(64, 64, 3), classifier_activation=None)
    rng = np.random.default_rng(0)
    randomize_batchnorm(model, rng)
    images = rng.normal(0, 1, (24, 64, 64, 3)).astype("float32")
    report = to_tflite(model, tmp_path / "int8.tflite", "int8", images[:16],
                       validation_data=images[16:])
    assert report.agreement.cosine >= 0.99
