"""keras_attn.convert: pytorchcv's checkpoints (osmr's imgclsmob) loaded into keras_attn models.

The generator below writes random weights and BatchNorm statistics under the key names and
shapes of pytorchcv's own model definitions (pytorchcv 0.0.74: `cbamresnet.py`, `bamresnet.py`,
`seresnet.py`, `resnet.py`, `common/conv.py`, `common/att.py`), and the NumPy forward computes
those modules' equations straight from that state dict; neither uses keras_attn. PyTorch is not
needed here: pytorchcv's modules are read, not run (tests/test_pytorchcv_models.py runs them).
"""

import numpy as np
import pytest
from test_convert import (
    StateDictWriter,
    assert_close,
    batchnorm,
    conv2d,
    keras_forward,
    linear,
    max_pool_3x3_s2_p1,
    nchw_input,
    relu,
    sigmoid,
)

from keras_attn import models
from keras_attn.convert import StateDictMismatchError, load_torch_state_dict
from keras_attn.layers import BAM, CBAM

# depth -> (bottleneck, units per stage); get_resnet() of cbamresnet.py / bamresnet.py.
UNITS = {18: (False, (2, 2, 2, 2)), 34: (False, (3, 4, 6, 3)), 50: (True, (3, 4, 6, 3)),
         101: (True, (3, 4, 23, 3)), 152: (True, (3, 8, 36, 3))}


class PytorchcvWriter(StateDictWriter):
    def conv_block(self, key, out_channels, in_channels, kernel_size, bias=False):
        # common/conv.py ConvBlock: `conv` (nn.Conv2d) then `bn` (nn.BatchNorm2d).
        self.conv(f"{key}.conv", out_channels, in_channels, kernel_size, bias=bias)
        self.batchnorm(f"{key}.bn", out_channels)

    def cbam(self, key, channels):
        # CbamBlock: ch_gate.mlp = MLP(fc1, activ, fc2); sp_gate.conv = conv7x7_block(2, 1).
        self.linear(f"{key}.ch_gate.mlp.fc1", channels // 16, channels)
        self.linear(f"{key}.ch_gate.mlp.fc2", channels, channels // 16)
        self.conv_block(f"{key}.sp_gate.conv", 1, 2, 7)

    def bam(self, key, channels):
        # BamBlock: ch_att = (init_fc = DenseBlock(fc, bn), final_fc); sp_att = (init_conv,
        # dil_convs.conv1, dil_convs.conv2: conv blocks with bias; final_conv: conv1x1 with bias).
        mid = channels // 16
        self.linear(f"{key}.ch_att.init_fc.fc", mid, channels)
        self.batchnorm(f"{key}.ch_att.init_fc.bn", mid)
        self.linear(f"{key}.ch_att.final_fc", channels, mid)
        self.conv_block(f"{key}.sp_att.init_conv", mid, channels, 1, bias=True)
        for i in (1, 2):
            self.conv_block(f"{key}.sp_att.dil_convs.conv{i}", mid, mid, 3, bias=True)
        self.conv(f"{key}.sp_att.final_conv", 1, mid, 1, bias=True)

    def se(self, key, channels):
        # common/att.py SEBlock(use_conv=True): conv1, conv2 are 1x1 convolutions with bias.
        self.conv(f"{key}.conv1", channels // 16, channels, 1, bias=True)
        self.conv(f"{key}.conv2", channels, channels // 16, 1, bias=True)


def pytorchcv_state_dict(depth, attention, num_classes=10, seed=0):
    """The state dict of pytorchcv's `{attention}_resnet{depth}` / `seresnet{depth}(b)`."""
    writer = PytorchcvWriter(seed)
    bottleneck, units = UNITS[depth]
    widths = (256, 512, 1024, 2048) if bottleneck else (64, 128, 256, 512)
    writer.conv_block("features.init_block.conv", 64, 3, 7)
    in_channels = 64
    for stage, (out_channels, count) in enumerate(zip(widths, units), start=1):
        for index in range(1, count + 1):
            key = f"features.stage{stage}.unit{index}"
            stride = 2 if stage > 1 and index == 1 else 1
            if attention == "bam":  # BamResUnit: (BAM before a strided unit), res_unit
                if stride != 1:
                    writer.bam(f"{key}.bam", in_channels)
                key = f"{key}.res_unit"
            if bottleneck:
                mid = out_channels // 4
                writer.conv_block(f"{key}.body.conv1", mid, in_channels, 1)
                writer.conv_block(f"{key}.body.conv2", mid, mid, 3)
                writer.conv_block(f"{key}.body.conv3", out_channels, mid, 1)
            else:
                writer.conv_block(f"{key}.body.conv1", out_channels, in_channels, 3)
                writer.conv_block(f"{key}.body.conv2", out_channels, out_channels, 3)
            if stride != 1 or in_channels != out_channels:
                writer.conv_block(f"{key}.identity_conv", out_channels, in_channels, 1)
            if attention in ("cbam", "se"):
                getattr(writer, attention)(f"{key}.{attention}", out_channels)
            in_channels = out_channels
    writer.linear("output", num_classes, in_channels)
    return writer.state


# --- NumPy forward of pytorchcv's modules (NCHW, float64, eval mode). ----------------------------


def conv_block(x, state, key, stride=1, padding=0, dilation=1, activation=True):
    bias = state.get(f"{key}.conv.bias")
    out = batchnorm(conv2d(x, state[f"{key}.conv.weight"], bias, stride, padding, dilation),
                    state, f"{key}.bn")
    return relu(out) if activation else out


def cbam_forward(x, state, key):
    def mlp(v):
        return linear(relu(linear(v, state, f"{key}.ch_gate.mlp.fc1")), state,
                      f"{key}.ch_gate.mlp.fc2")

    x = x * sigmoid(mlp(x.mean(axis=(2, 3))) + mlp(x.max(axis=(2, 3))))[:, :, None, None]
    pooled = np.concatenate([x.max(axis=1, keepdims=True), x.mean(axis=1, keepdims=True)], axis=1)
    return x * sigmoid(conv_block(pooled, state, f"{key}.sp_gate.conv", padding=3,
                                  activation=False))


def bam_forward(x, state, key):
    hidden = relu(batchnorm(linear(x.mean(axis=(2, 3)), state, f"{key}.ch_att.init_fc.fc"),
                            state, f"{key}.ch_att.init_fc.bn"))
    channel = linear(hidden, state, f"{key}.ch_att.final_fc")[:, :, None, None]
    s = conv_block(x, state, f"{key}.sp_att.init_conv")
    for i in (1, 2):
        s = conv_block(s, state, f"{key}.sp_att.dil_convs.conv{i}", padding=4, dilation=4)
    spatial = conv2d(s, state[f"{key}.sp_att.final_conv.weight"],
                     state[f"{key}.sp_att.final_conv.bias"])
    return x * (1.0 + sigmoid(channel * spatial))


def se_forward(x, state, key):
    w = x.mean(axis=(2, 3), keepdims=True)
    w = relu(conv2d(w, state[f"{key}.conv1.weight"], state[f"{key}.conv1.bias"]))
    return x * sigmoid(conv2d(w, state[f"{key}.conv2.weight"], state[f"{key}.conv2.bias"]))


def unit_forward(x, state, key, bottleneck, stride, attention):
    if attention == "bam":
        if stride != 1:
            x = bam_forward(x, state, f"{key}.bam")
        key = f"{key}.res_unit"
    identity = x
    if f"{key}.identity_conv.conv.weight" in state:
        identity = conv_block(x, state, f"{key}.identity_conv", stride=stride, activation=False)
    if bottleneck:  # conv1_stride=False: the 3x3 convolution strides
        out = conv_block(x, state, f"{key}.body.conv1")
        out = conv_block(out, state, f"{key}.body.conv2", stride=stride, padding=1)
        out = conv_block(out, state, f"{key}.body.conv3", activation=False)
    else:
        out = conv_block(x, state, f"{key}.body.conv1", stride=stride, padding=1)
        out = conv_block(out, state, f"{key}.body.conv2", padding=1, activation=False)
    if attention == "cbam":
        out = cbam_forward(out, state, f"{key}.cbam")
    elif attention == "se":
        out = se_forward(out, state, f"{key}.se")
    return relu(out + identity)


def resnet_forward(x, state, depth, attention):
    bottleneck, units = UNITS[depth]
    x = max_pool_3x3_s2_p1(conv_block(x, state, "features.init_block.conv", stride=2, padding=3))
    for stage, count in enumerate(units, start=1):
        for index in range(1, count + 1):
            stride = 2 if stage > 1 and index == 1 else 1
            x = unit_forward(x, state, f"features.stage{stage}.unit{index}", bottleneck, stride,
                             attention)
    # final_pool is AvgPool2d(7) on the 7x7 map of a 224 input: the global mean.
    return linear(x.mean(axis=(2, 3)), state, "output")


def loaded(depth, attention, input_size=32, seed=0):
    state = pytorchcv_state_dict(depth, attention, seed=seed)
    model = models.resnet(depth, attention=attention, input_shape=(input_size, input_size, 3),
                          num_classes=10, classifier_activation=None)
    load_torch_state_dict(model, state)
    return state, model


# --- Tests. ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth, attention", [(18, "cbam"), (18, "bam"), (18, "se"),
                                              (50, "cbam"), (50, "bam")])
def test_whole_resnet_matches_pytorchcv_equations(depth, attention):
    state, model = loaded(depth, attention, input_size=64 if depth == 50 else 32, seed=depth)
    x = nchw_input((2, 3, model.input_shape[1], model.input_shape[2]), seed=2)
    expected = resnet_forward(x, state, depth, attention)
    assert expected.std() > 100 * 1e-4  # logits far apart compared with the tolerance
    assert_close(keras_forward(model, x), expected)


def test_pytorchcv_batchnorm_momentum_and_bam_fusion():
    _, model = loaded(18, "cbam")
    assert model.get_layer("layer1.0.cbam").spatial_attention.bn.momentum == pytest.approx(0.9)
    _, model = loaded(18, "bam")
    assert [model.get_layer(f"bam{i}").fusion for i in (1, 2, 3)] == ["product"] * 3


@pytest.mark.parametrize("layer_class, attention", [(CBAM, "cbam"), (BAM, "bam")])
def test_single_layer_loads_pytorchcv_module_keys(layer_class, attention):
    writer = PytorchcvWriter(seed=5)
    getattr(writer, attention)("m", 64)
    layer = layer_class()
    x = np.abs(nchw_input((2, 64, 8, 8), seed=6))
    layer(x.transpose(0, 2, 3, 1))
    load_torch_state_dict(layer, {key[2:]: value for key, value in writer.state.items()})
    forward = cbam_forward if attention == "cbam" else bam_forward
    assert_close(keras_forward(layer, x), forward(x, writer.state, "m"))


def test_data_parallel_prefix_on_pytorchcv_keys():
    state = {f"module.{key}": value for key, value in pytorchcv_state_dict(18, "se").items()}
    model = models.resnet18(attention="se", input_shape=(32, 32, 3), num_classes=10)
    load_torch_state_dict(model, state)
    np.testing.assert_array_equal(model.get_layer("fc").bias.numpy(), state["module.output.bias"])


def test_pytorchcv_mismatches_are_reported_in_pytorchcv_names():
    state = pytorchcv_state_dict(18, "cbam")
    del state["features.stage3.unit2.cbam.sp_gate.conv.bn.running_var"]
    state["features.stage4.unit1.cbam.ch_gate.mlp.fc1.weight"] = np.zeros((3, 512), np.float32)
    model = models.resnet18(attention="cbam", input_shape=(32, 32, 3), num_classes=10)
    with pytest.raises(StateDictMismatchError) as info:
        load_torch_state_dict(model, state)
    assert info.value.missing == ["features.stage3.unit2.cbam.sp_gate.conv.bn.running_var"]
    assert info.value.mismatched == ["features.stage4.unit1.cbam.ch_gate.mlp.fc1.weight: "
                                     "checkpoint (3, 512), model expects (32, 512)"]


def test_pytorchcv_cbam_checkpoint_into_a_bam_model_lists_the_foreign_keys():
    model = models.resnet18(attention="bam", input_shape=(32, 32, 3), num_classes=10)
    with pytest.raises(StateDictMismatchError, match=r"features\.stage1\.unit1\.cbam\.ch_gate"):
        load_torch_state_dict(model, pytorchcv_state_dict(18, "cbam"))


@pytest.mark.slow
@pytest.mark.parametrize("depth, attention", [(152, "cbam"), (101, "bam")])
def test_deepest_published_depths_load_pytorchcv_keys(depth, attention):
    # Key names and shapes only (the layouts differ from -50 only in unit counts); the numerics
    # are checked on ResNet-18 and -50 above.
    state = pytorchcv_state_dict(depth, attention, num_classes=1000)
    model = models.resnet(depth, attention=attention)
    load_torch_state_dict(model, state)
    np.testing.assert_array_equal(model.get_layer("fc").bias.numpy(), state["output.bias"])
