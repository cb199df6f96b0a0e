"""keras_attn.convert: the CBAM/BAM authors' PyTorch state dicts loaded into Keras.

The fixture generator below writes random weights under the key names of the authors' code
(`Jongchan/attention-module`, MODELS/model_resnet.py, cbam.py, bam.py) in PyTorch layouts, and
the NumPy forward below computes their modules' equations on NCHW arrays straight from that
state dict; neither uses keras_attn. The loaded Keras models must match it within 1e-4.
"""

import math
import sys
import types

import keras
import numpy as np
import pytest

from keras_attn import models
from keras_attn.convert import (
    StateDictMismatchError,
    load_torch_checkpoint,
    load_torch_state_dict,
)
from keras_attn.layers import BAM, CBAM, ECA, SqueezeExcite

TOLERANCE = 1e-4
STAGE_WIDTHS = (64, 128, 256, 512)
LAYOUTS = {18: ("basic", (2, 2, 2, 2)), 50: ("bottleneck", (3, 4, 6, 3))}


# --- Fixture generator: random weights under the authors' key names, PyTorch layouts. ---------


class StateDictWriter:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.state = {}

    def _put(self, key, array):
        self.state[key] = np.asarray(array, dtype=np.float32)

    def conv(self, key, out_channels, in_channels, kernel_size, bias=False):
        fan_in = in_channels * kernel_size * kernel_size
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        self._put(f"{key}.weight", self.rng.normal(0.0, math.sqrt(2.0 / fan_in), shape))
        if bias:
            self._put(f"{key}.bias", self.rng.normal(0.0, 0.1, out_channels))

    def linear(self, key, out_features, in_features):
        scale = math.sqrt(1.0 / in_features)
        self._put(f"{key}.weight", self.rng.normal(0.0, scale, (out_features, in_features)))
        self._put(f"{key}.bias", self.rng.normal(0.0, 0.1, out_features))

    def batchnorm(self, key, channels):
        self._put(f"{key}.weight", self.rng.uniform(0.4, 0.8, channels))
        self._put(f"{key}.bias", self.rng.normal(0.0, 0.1, channels))
        self._put(f"{key}.running_mean", self.rng.normal(0.0, 0.1, channels))
        self._put(f"{key}.running_var", self.rng.uniform(0.5, 1.5, channels))
        self.state[f"{key}.num_batches_tracked"] = np.array(1000, dtype=np.int64)

    def cbam(self, key, channels, reduction=16):
        # cbam.py: ChannelGate.mlp = (Flatten, Linear, ReLU, Linear);
        # SpatialGate.spatial = BasicConv(conv, bn).
        self.linear(f"{key}.ChannelGate.mlp.1", channels // reduction, channels)
        self.linear(f"{key}.ChannelGate.mlp.3", channels, channels // reduction)
        self.conv(f"{key}.SpatialGate.spatial.conv", 1, 2, 7)
        self.batchnorm(f"{key}.SpatialGate.spatial.bn", 1)

    def bam(self, key, channels, reduction=16):
        hidden = channels // reduction
        gate_c, gate_s = f"{key}.channel_att.gate_c", f"{key}.spatial_att.gate_s"
        self.linear(f"{gate_c}.gate_c_fc_0", hidden, channels)
        self.batchnorm(f"{gate_c}.gate_c_bn_1", hidden)
        self.linear(f"{gate_c}.gate_c_fc_final", channels, hidden)
        self.conv(f"{gate_s}.gate_s_conv_reduce0", hidden, channels, 1, bias=True)
        self.batchnorm(f"{gate_s}.gate_s_bn_reduce0", hidden)
        for i in range(2):
            self.conv(f"{gate_s}.gate_s_conv_di_{i}", hidden, hidden, 3, bias=True)
            self.batchnorm(f"{gate_s}.gate_s_bn_di_{i}", hidden)
        self.conv(f"{gate_s}.gate_s_conv_final", 1, hidden, 1, bias=True)


def authors_resnet_state_dict(depth, att_type=None, num_classes=10, seed=0):
    """The state dict of the authors' `ResidualNet("ImageNet", depth, num_classes, att_type)`."""
    writer = StateDictWriter(seed)
    block, counts = LAYOUTS[depth]
    expansion = 4 if block == "bottleneck" else 1
    writer.conv("conv1", 64, 3, 7)
    writer.batchnorm("bn1", 64)
    inplanes = 64
    for stage, (planes, count) in enumerate(zip(STAGE_WIDTHS, counts), start=1):
        for index in range(count):
            key = f"layer{stage}.{index}"
            stride = 2 if stage > 1 and index == 0 else 1
            if block == "bottleneck":
                writer.conv(f"{key}.conv1", planes, inplanes, 1)
                writer.batchnorm(f"{key}.bn1", planes)
                writer.conv(f"{key}.conv2", planes, planes, 3)
                writer.batchnorm(f"{key}.bn2", planes)
                writer.conv(f"{key}.conv3", planes * 4, planes, 1)
                writer.batchnorm(f"{key}.bn3", planes * 4)
            else:
                writer.conv(f"{key}.conv1", planes, inplanes, 3)
                writer.batchnorm(f"{key}.bn1", planes)
                writer.conv(f"{key}.conv2", planes, planes, 3)
                writer.batchnorm(f"{key}.bn2", planes)
            if stride != 1 or inplanes != planes * expansion:
                writer.conv(f"{key}.downsample.0", planes * expansion, inplanes, 1)
                writer.batchnorm(f"{key}.downsample.1", planes * expansion)
            if att_type == "CBAM":
                writer.cbam(f"{key}.cbam", planes * expansion)
            inplanes = planes * expansion
        if att_type == "BAM" and stage < 4:
            writer.bam(f"bam{stage}", inplanes)
    writer.linear("fc", num_classes, inplanes)
    return writer.state


def sub_state_dict(state, prefix):
    return {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")}


# --- NumPy forward of the authors' modules (NCHW, float64, eval mode). --------------------------


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1):
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    _, _, kernel_h, kernel_w = weight.shape
    out_h = (x.shape[2] - dilation * (kernel_h - 1) - 1) // stride + 1
    out_w = (x.shape[3] - dilation * (kernel_w - 1) - 1) // stride + 1
    out = np.zeros((x.shape[0], weight.shape[0], out_h, out_w))
    for i in range(kernel_h):
        for j in range(kernel_w):
            patch = x[:, :, i * dilation:i * dilation + stride * (out_h - 1) + 1:stride,
                      j * dilation:j * dilation + stride * (out_w - 1) + 1:stride]
            out += np.einsum("nchw,oc->nohw", patch, weight[:, :, i, j].astype(np.float64))
    if bias is not None:
        out += bias[None, :, None, None]
    return out


def batchnorm(x, state, key):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean = state[f"{key}.running_mean"].reshape(shape)
    var = state[f"{key}.running_var"].reshape(shape)
    return ((x - mean) / np.sqrt(var.astype(np.float64) + 1e-5)
            * state[f"{key}.weight"].reshape(shape) + state[f"{key}.bias"].reshape(shape))


def relu(x):
    return np.maximum(x, 0.0)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def linear(x, state, key):
    return x @ state[f"{key}.weight"].T.astype(np.float64) + state[f"{key}.bias"]


def max_pool_3x3_s2_p1(x):
    x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    out_h, out_w = (x.shape[2] - 3) // 2 + 1, (x.shape[3] - 3) // 2 + 1
    return np.max([x[:, :, i:i + 2 * out_h - 1:2, j:j + 2 * out_w - 1:2]
                   for i in range(3) for j in range(3)], axis=0)


def cbam_forward(x, state, key):
    # ChannelGate: sigmoid(mlp(avg_pool(x)) + mlp(max_pool(x))); SpatialGate on [max_c, mean_c].
    def mlp(v):
        return linear(relu(linear(v, state, f"{key}.ChannelGate.mlp.1")), state,
                      f"{key}.ChannelGate.mlp.3")

    x = x * sigmoid(mlp(x.mean(axis=(2, 3))) + mlp(x.max(axis=(2, 3))))[:, :, None, None]
    pooled = np.concatenate([x.max(axis=1, keepdims=True), x.mean(axis=1, keepdims=True)], axis=1)
    spatial = f"{key}.SpatialGate.spatial"
    logits = batchnorm(conv2d(pooled, state[f"{spatial}.conv.weight"], padding=3), state,
                       f"{spatial}.bn")
    return x * sigmoid(logits)


def bam_forward(x, state, key):
    # att = 1 + sigmoid(channel_att(x) * spatial_att(x)), the released code's product fusion.
    gate_c, gate_s = f"{key}.channel_att.gate_c", f"{key}.spatial_att.gate_s"
    hidden = relu(batchnorm(linear(x.mean(axis=(2, 3)), state, f"{gate_c}.gate_c_fc_0"), state,
                            f"{gate_c}.gate_c_bn_1"))
    channel = linear(hidden, state, f"{gate_c}.gate_c_fc_final")[:, :, None, None]

    def conv_bn_relu(v, conv_key, bn_key, padding=0, dilation=1):
        v = conv2d(v, state[f"{conv_key}.weight"], state[f"{conv_key}.bias"], padding=padding,
                   dilation=dilation)
        return relu(batchnorm(v, state, bn_key))

    s = conv_bn_relu(x, f"{gate_s}.gate_s_conv_reduce0", f"{gate_s}.gate_s_bn_reduce0")
    for i in range(2):
        s = conv_bn_relu(s, f"{gate_s}.gate_s_conv_di_{i}", f"{gate_s}.gate_s_bn_di_{i}",
                         padding=4, dilation=4)
    spatial = conv2d(s, state[f"{gate_s}.gate_s_conv_final.weight"],
                     state[f"{gate_s}.gate_s_conv_final.bias"])
    return (1.0 + sigmoid(channel * spatial)) * x


def block_forward(x, state, key, block, stride, cbam):
    def conv_bn(v, name, stride=1, padding=0):
        return batchnorm(conv2d(v, state[f"{key}.conv{name}.weight"], stride=stride,
                                padding=padding), state, f"{key}.bn{name}")

    if block == "bottleneck":
        out = relu(conv_bn(x, 1))
        out = relu(conv_bn(out, 2, stride=stride, padding=1))
        out = conv_bn(out, 3)
    else:
        out = relu(conv_bn(x, 1, stride=stride, padding=1))
        out = conv_bn(out, 2, padding=1)
    residual = x
    if f"{key}.downsample.0.weight" in state:
        residual = batchnorm(conv2d(x, state[f"{key}.downsample.0.weight"], stride=stride),
                             state, f"{key}.downsample.1")
    if cbam:
        out = cbam_forward(out, state, f"{key}.cbam")
    return relu(out + residual)


def resnet_forward(x, state, depth, att_type):
    block, counts = LAYOUTS[depth]
    x = relu(batchnorm(conv2d(x, state["conv1.weight"], stride=2, padding=3), state, "bn1"))
    x = max_pool_3x3_s2_p1(x)
    for stage, count in enumerate(counts, start=1):
        for index in range(count):
            stride = 2 if stage > 1 and index == 0 else 1
            x = block_forward(x, state, f"layer{stage}.{index}", block, stride,
                              att_type == "CBAM")
        if att_type == "BAM" and stage < 4:
            x = bam_forward(x, state, f"bam{stage}")
    return linear(x.mean(axis=(2, 3)), state, "fc")


# --- Helpers and fixtures. -----------------------------------------------------------------------


def nchw_input(shape, seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def keras_forward(model, x_nchw, data_format="channels_last"):
    if data_format == "channels_first":
        return keras.ops.convert_to_numpy(model(x_nchw, training=False))
    y = keras.ops.convert_to_numpy(model(x_nchw.transpose(0, 2, 3, 1), training=False))
    return y.transpose(0, 3, 1, 2) if y.ndim == 4 else y


def sub_model(model, first_layer, last_layer):
    return keras.Model(model.get_layer(first_layer).input, model.get_layer(last_layer).output)


def assert_close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=TOLERANCE, atol=TOLERANCE)


def loaded_resnet50(att_type):
    state = authors_resnet_state_dict(50, att_type, num_classes=10)
    model = models.resnet50(attention=att_type.lower(), input_shape=(64, 64, 3), num_classes=10,
                            classifier_activation=None)
    load_torch_state_dict(model, state)
    return state, model


@pytest.fixture(scope="module")
def cbam_resnet50():
    return loaded_resnet50("CBAM")


@pytest.fixture(scope="module")
def bam_resnet50():
    return loaded_resnet50("BAM")


# --- Numerical parity with the authors' equations. -----------------------------------------------


def test_cbam_bottleneck_matches_authors_equations(cbam_resnet50):
    state, model = cbam_resnet50
    # layer2.0: stride 2, projection shortcut, CBAM on the residual branch.
    block = sub_model(model, "layer2.0.conv1", "layer2.0.relu")
    x = np.abs(nchw_input((2, 256, 16, 16)))  # a block input follows a ReLU
    expected = block_forward(x, state, "layer2.0", "bottleneck", 2, cbam=True)
    assert_close(keras_forward(block, x), expected)


def test_bam_block_matches_authors_equations(bam_resnet50):
    state, model = bam_resnet50
    bam = model.get_layer("bam2")
    assert bam.fusion == "product"
    x = np.abs(nchw_input((2, 512, 8, 8)))
    expected = bam_forward(x, state, "bam2")
    assert_close(keras_forward(bam, x), expected)


@pytest.mark.parametrize("att_type", ["CBAM", "BAM"])
def test_whole_resnet50_matches_authors_equations(att_type, request):
    state, model = request.getfixturevalue(f"{att_type.lower()}_resnet50")
    x = nchw_input((2, 3, 64, 64))
    expected = resnet_forward(x, state, 50, att_type)
    assert expected.std() > 100 * TOLERANCE  # logits far apart compared with the tolerance
    assert_close(keras_forward(model, x), expected)


@pytest.mark.parametrize("layer_class, att_type", [(CBAM, "CBAM"), (BAM, "BAM")])
def test_single_layer_loads_module_relative_keys(layer_class, att_type):
    writer = StateDictWriter(seed=3)
    getattr(writer, att_type.lower())("m", 64)
    state = sub_state_dict(writer.state, "m")
    layer = layer_class()
    x = np.abs(nchw_input((2, 64, 8, 8), seed=4))
    layer(x.transpose(0, 2, 3, 1))
    load_torch_state_dict(layer, state)
    forward = cbam_forward if att_type == "CBAM" else bam_forward
    expected = forward(x, {f"m.{k}": v for k, v in state.items()}, "m")
    assert_close(keras_forward(layer, x), expected)


def test_channels_first_model_gives_the_same_logits():
    state = authors_resnet_state_dict(18, "CBAM", num_classes=10, seed=5)
    x = nchw_input((1, 3, 32, 32), seed=6)
    logits = {}
    for data_format in ("channels_last", "channels_first"):
        shape = (3, 32, 32) if data_format == "channels_first" else (32, 32, 3)
        model = models.resnet18(attention="cbam", input_shape=shape, num_classes=10,
                                data_format=data_format, classifier_activation=None)
        load_torch_state_dict(model, state)
        logits[data_format] = keras_forward(model, x, data_format)
    assert_close(logits["channels_first"], resnet_forward(x, state, 18, "CBAM"))
    assert_close(logits["channels_last"], logits["channels_first"])


# Keras' TensorFlow-backend saving calls np.array on tensors without `copy` under NumPy 2.
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")
def test_loaded_model_saves_and_reloads_with_the_product_fusion(tmp_path):
    state = authors_resnet_state_dict(18, "BAM", num_classes=10, seed=14)
    model = models.resnet18(attention="bam", input_shape=(32, 32, 3), num_classes=10)
    load_torch_state_dict(model, state)
    model.save(tmp_path / "bam_resnet18.keras")
    reloaded = keras.saving.load_model(tmp_path / "bam_resnet18.keras")
    assert [reloaded.get_layer(f"bam{i}").fusion for i in (1, 2, 3)] == ["product"] * 3
    x = nchw_input((1, 3, 32, 32), seed=15)
    np.testing.assert_array_equal(keras_forward(reloaded, x), keras_forward(model, x))


def test_loading_after_predict_retraces_with_the_product_fusion():
    state = authors_resnet_state_dict(18, "BAM", num_classes=10, seed=16)
    model = models.resnet18(attention="bam", input_shape=(32, 32, 3), num_classes=10)
    x = nchw_input((2, 3, 32, 32), seed=17).transpose(0, 2, 3, 1)
    model.predict(x, verbose=0)  # traces with the default "sum" fusion
    load_torch_state_dict(model, state)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-6, atol=1e-6)


# --- Layouts, key handling and BatchNorm conventions. --------------------------------------------


def small_plain_model():
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)  # with bias, Keras' BN defaults below
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(5, name="fc")(x))


def small_plain_state_dict():
    writer = StateDictWriter(seed=7)
    writer.conv("conv", 4, 3, 3, bias=True)
    writer.batchnorm("bn", 4)
    writer.linear("fc", 5, 4)
    return writer.state


def test_layouts_and_batchnorm_conventions():
    model, state = small_plain_model(), small_plain_state_dict()
    load_torch_state_dict(model, state)
    conv, bn, fc = (model.get_layer(name) for name in ("conv", "bn", "fc"))
    np.testing.assert_array_equal(conv.kernel.numpy(), state["conv.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(conv.bias.numpy(), state["conv.bias"])
    np.testing.assert_array_equal(fc.kernel.numpy(), state["fc.weight"].T)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), state["bn.running_mean"])
    np.testing.assert_array_equal(bn.moving_variance.numpy(), state["bn.running_var"])
    np.testing.assert_array_equal(bn.gamma.numpy(), state["bn.weight"])
    assert bn.momentum == pytest.approx(0.9)  # PyTorch's momentum=0.1
    assert bn.epsilon == pytest.approx(1e-5)


def test_cbam_spatial_batchnorm_gets_the_authors_momentum():
    layer = CBAM()
    layer.build((None, 8, 8, 64))
    writer = StateDictWriter(seed=8)
    writer.cbam("m", 64)
    load_torch_state_dict(layer, sub_state_dict(writer.state, "m"))
    assert layer.spatial_attention.bn.momentum == pytest.approx(0.99)  # their momentum=0.01


def test_data_parallel_prefix_and_missing_num_batches_tracked_are_accepted():
    state = small_plain_state_dict()
    prefixed = {f"module.{k}": v for k, v in state.items() if "num_batches_tracked" not in k}
    model = small_plain_model()
    load_torch_state_dict(model, prefixed)
    np.testing.assert_array_equal(model.get_layer("fc").bias.numpy(), state["fc.bias"])


def test_squeeze_excite_takes_linear_or_1x1_conv_weights():
    rng = np.random.default_rng(9)
    fc1, fc2 = rng.normal(size=(2, 32)), rng.normal(size=(32, 2))
    for shape_suffix in ((), (1, 1)):
        layer = SqueezeExcite()
        layer.build((None, 4, 4, 32))
        load_torch_state_dict(layer, {
            "fc1.weight": fc1.reshape(fc1.shape + shape_suffix), "fc1.bias": np.zeros(2),
            "fc2.weight": fc2.reshape(fc2.shape + shape_suffix), "fc2.bias": np.zeros(32)})
        np.testing.assert_allclose(layer.reduce.kernel.numpy(), fc1.T, rtol=1e-6)
        np.testing.assert_allclose(layer.expand.kernel.numpy(), fc2.T, rtol=1e-6)


def test_every_mismatch_is_reported_at_once_and_nothing_is_loaded():
    model, state = small_plain_model(), small_plain_state_dict()
    before = [w.numpy().copy() for w in model.weights]
    del state["conv.bias"], state["bn.running_var"]
    state["fc.weight"] = np.zeros((5, 3), np.float32)
    state["head.weight"] = np.zeros(1, np.float32)
    with pytest.raises(StateDictMismatchError) as info:
        load_torch_state_dict(model, state)
    error = info.value
    assert isinstance(error, ValueError)
    assert error.missing == ["bn.running_var", "conv.bias"]
    assert error.unexpected == ["head.weight"]
    assert error.mismatched == ["fc.weight: checkpoint (5, 3), model expects (5, 4)"]
    message = str(error)
    for text in ("2 missing keys", "bn.running_var", "conv.bias", "1 unexpected key:",
                 "head.weight", "1 shape mismatch:", "fc.weight"):
        assert text in message
    for weight, old in zip(model.weights, before):
        np.testing.assert_array_equal(weight.numpy(), old)


def test_wrong_architecture_lists_the_foreign_keys():
    model = models.resnet18(input_shape=(32, 32, 3), num_classes=10)
    with pytest.raises(StateDictMismatchError, match="layer1.0.cbam.ChannelGate.mlp.1.weight"):
        load_torch_state_dict(model, authors_resnet_state_dict(18, "CBAM", num_classes=10))


def test_bad_arguments():
    model = small_plain_model()
    with pytest.raises(TypeError, match="`state_dict` must be a mapping"):
        load_torch_state_dict(model, [("fc.bias", np.zeros(5))])
    with pytest.raises(TypeError, match="`model_or_layer` must be a Keras model or layer"):
        load_torch_state_dict("resnet50", {})
    with pytest.raises(ValueError, match="is not built"):
        load_torch_state_dict(CBAM(), {})
    with pytest.raises(TypeError, match=r"`state_dict\['fc.bias'\]` must be an array"):
        load_torch_state_dict(model, {**small_plain_state_dict(), "fc.bias": "zeros"})
    with pytest.raises(ValueError, match="twice"):
        load_torch_state_dict(model, {"fc.bias": np.zeros(5), "module.fc.bias": np.zeros(5)})
    eca = ECA()
    eca.build((None, 4, 4, 32))
    with pytest.raises(TypeError, match=r"no PyTorch key names: .*\(ECA\)"):
        load_torch_state_dict(eca, {})


def test_checkpoint_without_torch_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    path = tmp_path / "model.pth.tar"
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(ImportError, match="pip install torch"):
        load_torch_checkpoint(small_plain_model(), path)


def test_bad_values_are_all_reported_and_nothing_is_loaded():
    model, state = small_plain_model(), small_plain_state_dict()
    before = [w.numpy().copy() for w in model.weights]
    state["conv.weight"] = state["conv.weight"] * (1 + 1j)
    state["bn.weight"] = np.array([1.0, None, 1.0, 1.0], dtype=object)
    state["bn.running_var"] = np.array([1.0, -0.5, 1.0, 1.0], np.float32)
    state["bn.bias"] = np.array([0.0, 1e300, 0.0, 0.0])  # infinite in float32
    state["fc.weight"] = np.where(np.eye(5, 4) > 0, np.nan, state["fc.weight"])
    state["fc.bias"] = np.array(["0"] * 5)  # the last key: everything else would be assigned
    with pytest.raises(StateDictMismatchError) as info:
        load_torch_state_dict(model, state)
    error = info.value
    assert not (error.missing or error.unexpected or error.mismatched)
    bad = dict(line.split(": ", 1) for line in error.invalid)
    assert sorted(bad) == ["bn.bias", "bn.running_var", "bn.weight", "conv.weight", "fc.bias",
                           "fc.weight"]
    assert "complex" in bad["conv.weight"] and "strings" in bad["fc.bias"]
    assert "Python objects" in bad["bn.weight"] and "negative" in bad["bn.running_var"]
    assert "4 of 20 values are NaN or infinite" in bad["fc.weight"]
    assert "1 of 4 values" in bad["bn.bias"]
    assert "6 bad values:" in str(error)
    for weight, old in zip(model.weights, before):
        np.testing.assert_array_equal(weight.numpy(), old)


def test_allow_non_finite_loads_nan_weights():
    model, state = small_plain_model(), small_plain_state_dict()
    state["fc.bias"] = np.full(5, np.nan, np.float32)
    with pytest.raises(StateDictMismatchError, match="fc.bias: 5 of 5 values are NaN"):
        load_torch_state_dict(model, state)
    load_torch_state_dict(model, state, allow_non_finite=True)
    assert np.isnan(model.get_layer("fc").bias.numpy()).all()


def test_empty_or_unreadable_checkpoint_file_names_the_file(monkeypatch, tmp_path):
    empty = tmp_path / "empty.pth"
    empty.touch()
    with pytest.raises(ValueError, match=r"empty\.pth' is an empty file"):
        load_torch_checkpoint(small_plain_model(), empty)

    def truncated_load(path, **kwargs):
        raise EOFError()

    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(load=truncated_load))
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(b"PK\x03\x04")
    with pytest.raises(ValueError, match=r"truncated\.pth' could not be read .*EOFError"):
        load_torch_checkpoint(small_plain_model(), truncated)


# --- Against PyTorch itself, when it is installed. -----------------------------------------------


def test_matches_a_pytorch_cbam_bottleneck_and_bam(tmp_path, request):
    torch = pytest.importorskip(
        "torch", reason="PyTorch is not installed; the NumPy tests above cover the same parity")
    from torch import nn
    from torch.nn import functional

    class TorchCBAM(nn.Module):
        """CBAM as the paper defines it, with the authors' module names."""

        def __init__(self, channels, reduction=16):
            super().__init__()
            self.ChannelGate = nn.Module()
            self.ChannelGate.mlp = nn.Sequential(
                nn.Flatten(), nn.Linear(channels, channels // reduction), nn.ReLU(),
                nn.Linear(channels // reduction, channels))
            self.SpatialGate = nn.Module()
            self.SpatialGate.spatial = nn.Module()
            self.SpatialGate.spatial.conv = nn.Conv2d(2, 1, 7, padding=3, bias=False)
            self.SpatialGate.spatial.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)

        def forward(self, x):
            mlp = self.ChannelGate.mlp
            x = x * torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.amax((2, 3))))[:, :, None, None]
            pooled = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)
            spatial = self.SpatialGate.spatial
            return x * torch.sigmoid(spatial.bn(spatial.conv(pooled)))

    class TorchBottleneck(nn.Module):
        def __init__(self, inplanes, planes, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4))
            self.cbam = TorchCBAM(planes * 4)

        def forward(self, x):
            out = functional.relu(self.bn1(self.conv1(x)))
            out = functional.relu(self.bn2(self.conv2(out)))
            out = self.cbam(self.bn3(self.conv3(out)))
            return functional.relu(out + self.downsample(x))

    class TorchBAM(nn.Module):
        def __init__(self, channels, reduction=16):
            super().__init__()
            hidden = channels // reduction
            self.channel_att = nn.Module()
            self.channel_att.gate_c = nn.Sequential()
            for name, module in (("flatten", nn.Flatten()),
                                 ("gate_c_fc_0", nn.Linear(channels, hidden)),
                                 ("gate_c_bn_1", nn.BatchNorm1d(hidden)),
                                 ("gate_c_relu_1", nn.ReLU()),
                                 ("gate_c_fc_final", nn.Linear(hidden, channels))):
                self.channel_att.gate_c.add_module(name, module)
            self.spatial_att = nn.Module()
            self.spatial_att.gate_s = nn.Sequential()
            modules = [("gate_s_conv_reduce0", nn.Conv2d(channels, hidden, 1)),
                       ("gate_s_bn_reduce0", nn.BatchNorm2d(hidden)),
                       ("gate_s_relu_reduce0", nn.ReLU())]
            for i in range(2):
                modules += [(f"gate_s_conv_di_{i}", nn.Conv2d(hidden, hidden, 3, padding=4,
                                                              dilation=4)),
                            (f"gate_s_bn_di_{i}", nn.BatchNorm2d(hidden)),
                            (f"gate_s_relu_di_{i}", nn.ReLU())]
            modules.append(("gate_s_conv_final", nn.Conv2d(hidden, 1, 1)))
            for name, module in modules:
                self.spatial_att.gate_s.add_module(name, module)

        def forward(self, x):
            channel = self.channel_att.gate_c(x.mean((2, 3)))[:, :, None, None]
            return x * (1 + torch.sigmoid(channel * self.spatial_att.gate_s(x)))

    cbam_state, cbam_model = request.getfixturevalue("cbam_resnet50")
    bottleneck = TorchBottleneck(256, 128, stride=2)
    bottleneck.load_state_dict({key: torch.as_tensor(value) for key, value in
                                sub_state_dict(cbam_state, "layer2.0").items()})
    x = np.abs(nchw_input((2, 256, 16, 16), seed=12))
    with torch.no_grad():
        expected = bottleneck.eval()(torch.as_tensor(x)).numpy()
    block = sub_model(cbam_model, "layer2.0.conv1", "layer2.0.relu")
    assert_close(keras_forward(block, x), expected)

    writer = StateDictWriter(seed=10)
    writer.bam("bam", 256)
    torch_bam = TorchBAM(256)
    torch_bam.load_state_dict({key: torch.as_tensor(value) for key, value in
                               sub_state_dict(writer.state, "bam").items()})
    path = tmp_path / "bam.pth.tar"
    torch.save({"epoch": 90, "state_dict": torch_bam.state_dict()}, path)
    bam = BAM()
    x = np.abs(nchw_input((2, 256, 12, 12), seed=13))
    bam(x.transpose(0, 2, 3, 1))
    load_torch_checkpoint(bam, path)
    with torch.no_grad():
        expected = torch_bam.eval()(torch.as_tensor(x)).numpy()
    assert_close(keras_forward(bam, x), expected)
