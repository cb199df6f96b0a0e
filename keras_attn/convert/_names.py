"""Which PyTorch state-dict key of the CBAM/BAM authors' code names which Keras variable.

The authors' code is `Jongchan/attention-module` (`MODELS/model_resnet.py`, `cbam.py`, `bam.py`).
A Keras layer whose name is a PyTorch module path (`"layer1.0.conv1"`, `"bam1"`, as the
`keras_attn.models` builders name them) gets the keys `"<name>.<parameter>"`; inside the attention
layers the keys follow the authors' module names (`ChannelGate.mlp.1`, `channel_att.gate_c...`).
"""

import dataclasses

import keras

from keras_attn import layers as attention

# PyTorch's BatchNorm momentum weights the new batch statistic; Keras' weights the old moving one.
TORCH_BN_MOMENTUM = 0.1
# The authors' CBAM spatial gate builds its BatchNorm with momentum=0.01 (`BasicConv` in cbam.py).
TORCH_CBAM_SPATIAL_BN_MOMENTUM = 0.01
TORCH_BN_EPSILON = 1e-5


@dataclasses.dataclass(frozen=True)
class TorchParameter:
    """One PyTorch tensor and the Keras variable it becomes.

    `layout` is "conv" (OIHW -> HWIO), "linear" ((out, in) -> (in, out)) or "vector" (as is);
    `kind` is the kind of layer that owns it: "conv", "linear" or "batchnorm".
    """

    key: str
    variable: keras.Variable
    layout: str
    kind: str

    @property
    def torch_shape(self):
        shape = tuple(self.variable.shape)
        if self.layout == "conv":
            return (shape[3], shape[2], shape[0], shape[1])
        if self.layout == "linear":
            return (shape[1], shape[0])
        return shape


@dataclasses.dataclass
class TorchNames:
    """The authors' key names of every variable under one Keras model or layer."""

    parameters: list = dataclasses.field(default_factory=list)
    # Keys a checkpoint may or may not hold and that load nothing (BatchNorm's num_batches_tracked).
    optional_keys: set = dataclasses.field(default_factory=set)
    # (BatchNormalization layer, the PyTorch momentum the authors' module used).
    batchnorms: list = dataclasses.field(default_factory=list)
    bams: list = dataclasses.field(default_factory=list)
    # "path (type)" of layers that hold weights but have no PyTorch naming here.
    unsupported: list = dataclasses.field(default_factory=list)


def torch_names(model_or_layer, prefix=""):
    """Returns the `TorchNames` of `model_or_layer`, its keys starting with `prefix`."""
    names = TorchNames()
    _add_layer(names, prefix, model_or_layer)
    return names


def _join(prefix, name):
    return f"{prefix}.{name}" if prefix else name


def _add_layer(names, key, layer):
    for layer_type, add in _HANDLERS:
        if isinstance(layer, layer_type):
            add(names, key, layer)
            return
    if layer.weights:
        names.unsupported.append(f"{key or layer.name} ({type(layer).__name__})")


def _add_model(names, key, model):
    for layer in model.layers:
        if layer.weights:
            _add_layer(names, _join(key, layer.name), layer)


def _add_conv(names, key, layer):
    names.parameters.append(TorchParameter(_join(key, "weight"), layer.kernel, "conv", "conv"))
    if layer.use_bias:
        names.parameters.append(TorchParameter(_join(key, "bias"), layer.bias, "vector", "conv"))


def _add_dense(names, key, layer):
    names.parameters.append(TorchParameter(_join(key, "weight"), layer.kernel, "linear", "linear"))
    if layer.use_bias:
        names.parameters.append(TorchParameter(_join(key, "bias"), layer.bias, "vector", "linear"))


def _add_batchnorm(names, key, layer, momentum=TORCH_BN_MOMENTUM):
    pairs = [("weight", layer.gamma if layer.scale else None),
             ("bias", layer.beta if layer.center else None),
             ("running_mean", layer.moving_mean),
             ("running_var", layer.moving_variance)]
    for parameter, variable in pairs:
        if variable is not None:
            names.parameters.append(
                TorchParameter(_join(key, parameter), variable, "vector", "batchnorm"))
    names.optional_keys.add(_join(key, "num_batches_tracked"))
    names.batchnorms.append((layer, momentum))


def _add_channel_attention(names, key, layer):
    # cbam.py: mlp = Sequential(Flatten(), Linear, ReLU(), Linear).
    _add_dense(names, _join(key, "mlp.1"), layer.mlp_hidden)
    _add_dense(names, _join(key, "mlp.3"), layer.mlp_output)


def _add_spatial_attention(names, key, layer):
    # cbam.py: spatial = BasicConv(conv, bn) with BatchNorm2d(momentum=0.01).
    _add_conv(names, _join(key, "spatial.conv"), layer.conv)
    if layer.bn is not None:
        _add_batchnorm(names, _join(key, "spatial.bn"), layer.bn,
                       momentum=TORCH_CBAM_SPATIAL_BN_MOMENTUM)


def _add_cbam(names, key, layer):
    _add_channel_attention(names, _join(key, "ChannelGate"), layer.channel_attention)
    if layer.spatial_attention is not None:
        _add_spatial_attention(names, _join(key, "SpatialGate"), layer.spatial_attention)


def _add_bam_channel_gate(names, key, layer):
    # bam.py: gate_c = Sequential(flatten, gate_c_fc_0, gate_c_bn_1, gate_c_relu_1, ..., fc_final).
    key = _join(key, "gate_c")
    for i, (dense, bn) in enumerate(zip(layer.hidden_dense, layer.hidden_bn)):
        _add_dense(names, _join(key, f"gate_c_fc_{i}"), dense)
        _add_batchnorm(names, _join(key, f"gate_c_bn_{i + 1}"), bn)
    _add_dense(names, _join(key, "gate_c_fc_final"), layer.output_dense)


def _add_bam_spatial_gate(names, key, layer):
    # bam.py: gate_s = Sequential(conv_reduce0, bn_reduce0, relu, (conv_di_i, bn_di_i, relu)*,
    # conv_final).
    key = _join(key, "gate_s")
    _add_conv(names, _join(key, "gate_s_conv_reduce0"), layer.reduce_conv)
    _add_batchnorm(names, _join(key, "gate_s_bn_reduce0"), layer.reduce_bn)
    for i, (conv, bn) in enumerate(zip(layer.dilated_convs, layer.dilated_bns)):
        _add_conv(names, _join(key, f"gate_s_conv_di_{i}"), conv)
        _add_batchnorm(names, _join(key, f"gate_s_bn_di_{i}"), bn)
    _add_conv(names, _join(key, "gate_s_conv_final"), layer.output_conv)


def _add_bam(names, key, layer):
    _add_bam_channel_gate(names, _join(key, "channel_att"), layer.channel_gate)
    _add_bam_spatial_gate(names, _join(key, "spatial_att"), layer.spatial_gate)
    names.bams.append(layer)


def _add_squeeze_excite(names, key, layer):
    # The authors publish no SE code; these are torchvision's SqueezeExcitation names (fc1, fc2).
    _add_dense(names, _join(key, "fc1"), layer.reduce)
    _add_dense(names, _join(key, "fc2"), layer.expand)


# Subclasses before their bases: a keras.Model is a Layer, a composite before its parts.
_HANDLERS = (
    (keras.Model, _add_model),
    (attention.CBAM, _add_cbam),
    (attention.ChannelAttention, _add_channel_attention),
    (attention.SpatialAttention, _add_spatial_attention),
    (attention.BAM, _add_bam),
    (attention.BAMChannelGate, _add_bam_channel_gate),
    (attention.BAMSpatialGate, _add_bam_spatial_gate),
    (attention.SqueezeExcite, _add_squeeze_excite),
    (keras.layers.Conv2D, _add_conv),
    (keras.layers.Dense, _add_dense),
    (keras.layers.BatchNormalization, _add_batchnorm),
)
