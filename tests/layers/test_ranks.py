"""1D (N, L, C) and 3D (N, D, H, W, C) inputs, in both data formats, against the NumPy reference
(which takes any number of spatial axes), plus the shared layer contract at ranks 3 and 5."""

import keras
import numpy as np
import pytest
import reference
from layer_testing import (
    LAYER_CASES,
    random_input,
    randomize_weights,
    run_layer_test,
    to_channels_first,
    to_numpy,
    torch_bn,
    torch_conv,
    torch_linear,
)

from keras_attn import (
    BAM,
    CBAM,
    ECA,
    BAMChannelGate,
    BAMSpatialGate,
    ChannelAttention,
    SpatialAttention,
    SqueezeExcite,
)

ATOL = 1e-5
# channels_last shapes; every spatial size differs, so that a swapped axis shows.
SHAPES = {3: (2, 11, 8), 5: (2, 4, 5, 6, 8)}
CONVS = {3: keras.layers.Conv1D, 5: keras.layers.Conv3D}

RANKS = pytest.mark.parametrize("rank", sorted(SHAPES))
FORMATS = pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])


def _input(rank, data_format):
    x = random_input(SHAPES[rank])
    return x if data_format == "channels_last" else to_channels_first(x)


def _nc(t, data_format):
    """A layer's tensor in the reference's (N, C, ...) layout."""
    t = to_numpy(t)
    return to_channels_first(t) if data_format == "channels_last" else t


def _built(layer, x):
    layer.build(x.shape)
    randomize_weights(layer)
    return layer


def _mlp(layer):
    hidden, output = torch_linear(layer.mlp_hidden), torch_linear(layer.mlp_output)
    return dict(w1=hidden["w"], b1=hidden["b"], w2=output["w"], b2=output["b"])


def _channel_map(scale, rank):
    return scale.reshape(scale.shape + (1,) * (rank - 2))


@RANKS
@FORMATS
def test_channel_attention(rank, data_format):
    pool_types = ("avg", "max", "lp", "lse")
    x = _input(rank, data_format)
    layer = ChannelAttention(reduction_ratio=2, pool_types=pool_types, data_format=data_format)
    y, gate = _built(layer, x)(x, return_attention_scores=True)
    expected, scale = reference.cbam_channel_gate(_nc(x, data_format), _mlp(layer), pool_types)
    np.testing.assert_allclose(_nc(y, data_format), expected, atol=ATOL)
    assert tuple(gate.shape) == layer.compute_attention_scores_shape(x.shape)
    np.testing.assert_allclose(_nc(gate, data_format), _channel_map(scale, rank), atol=ATOL)


@RANKS
@FORMATS
@pytest.mark.parametrize("use_batchnorm", [True, False])
def test_spatial_attention(rank, data_format, use_batchnorm):
    x = _input(rank, data_format)
    layer = SpatialAttention(kernel_size=3, use_batchnorm=use_batchnorm, data_format=data_format)
    y, gate = _built(layer, x)(x, training=False, return_attention_scores=True)
    # A k, k x k or k x k x k convolution from the two pooled channels to one.
    assert type(layer.conv) is CONVS[rank]
    assert tuple(layer.conv.kernel.shape) == (3,) * (rank - 2) + (2, 1)
    bn = torch_bn(layer.bn) if use_batchnorm else None
    expected, scale = reference.cbam_spatial_gate(
        _nc(x, data_format), torch_conv(layer.conv)["w"], bn
    )
    np.testing.assert_allclose(_nc(y, data_format), expected, atol=ATOL)
    np.testing.assert_allclose(_nc(gate, data_format), scale, atol=ATOL)


@RANKS
@FORMATS
def test_cbam(rank, data_format):
    x = _input(rank, data_format)
    layer = _built(CBAM(reduction_ratio=2, kernel_size=3, data_format=data_format), x)
    y, scores = layer(x, training=False, return_attention_scores=True)
    expected = reference.cbam(
        _nc(x, data_format),
        _mlp(layer.channel_attention),
        torch_conv(layer.spatial_attention.conv)["w"],
        torch_bn(layer.spatial_attention.bn),
    )
    np.testing.assert_allclose(_nc(y, data_format), expected, atol=ATOL)
    shapes = layer.compute_attention_scores_shape(x.shape)
    assert {k: tuple(v.shape) for k, v in scores.items()} == shapes


@RANKS
@FORMATS
def test_squeeze_excite(rank, data_format):
    x = _input(rank, data_format)
    layer = _built(SqueezeExcite(reduction_ratio=2, data_format=data_format), x)
    reduce, expand = torch_linear(layer.reduce), torch_linear(layer.expand)
    expected = reference.squeeze_excite(
        _nc(x, data_format), reduce["w"], reduce["b"], expand["w"], expand["b"]
    )
    np.testing.assert_allclose(_nc(layer(x), data_format), expected, atol=ATOL)


@RANKS
@FORMATS
def test_eca(rank, data_format):
    x = _input(rank, data_format)
    layer = _built(ECA(kernel_size=3, data_format=data_format), x)
    expected = reference.eca(_nc(x, data_format), to_numpy(layer.conv.kernel)[:, 0, 0])
    np.testing.assert_allclose(_nc(layer(x), data_format), expected, atol=ATOL)


def _bam_channel_reference(gate, x_nc):
    hidden = [(torch_linear(d), torch_bn(b)) for d, b in zip(gate.hidden_dense, gate.hidden_bn)]
    return reference.bam_channel_gate(x_nc, hidden, torch_linear(gate.output_dense))


def _bam_spatial_reference(gate, x_nc):
    dilated = [(torch_conv(c), torch_bn(b)) for c, b in zip(gate.dilated_convs, gate.dilated_bns)]
    return reference.bam_spatial_gate(
        x_nc,
        torch_conv(gate.reduce_conv),
        torch_bn(gate.reduce_bn),
        dilated,
        torch_conv(gate.output_conv),
        dilation=gate.dilation_rate,
    )


@RANKS
@FORMATS
@pytest.mark.parametrize("fusion", ["sum", "product"])
def test_bam(rank, data_format, fusion):
    x = _input(rank, data_format)
    layer = BAM(reduction_ratio=2, dilation_rate=2, fusion=fusion, data_format=data_format)
    y, scores = _built(layer, x)(x, training=False, return_attention_scores=True)
    x_nc = _nc(x, data_format)
    channel = _bam_channel_reference(layer.channel_gate, x_nc)
    spatial = _bam_spatial_reference(layer.spatial_gate, x_nc)
    assert all(type(c) is CONVS[rank] for c in layer.spatial_gate.dilated_convs)
    np.testing.assert_allclose(
        _nc(layer.channel_gate(x, training=False), data_format),
        _channel_map(channel, rank),
        atol=ATOL,
    )
    np.testing.assert_allclose(
        _nc(layer.spatial_gate(x, training=False), data_format), spatial, atol=ATOL
    )
    expected = reference.bam(x_nc, channel, spatial, fusion)
    np.testing.assert_allclose(_nc(y, data_format), expected, atol=ATOL)
    c = reference.per_channel(channel, rank)
    attention = reference.sigmoid(c * spatial if fusion == "product" else c + spatial)
    np.testing.assert_allclose(_nc(scores["attention"], data_format), attention, atol=ATOL)


# Every layer that takes 1D and 3D inputs: serialization, a training step that moves every
# variable, other sizes through a (None, ..., C) model, and .keras save -> load.
RANKED_CASES = [
    name for name, (cls, _) in LAYER_CASES.items() if 3 in cls.SUPPORTED_RANKS
]


def test_every_layer_but_selective_kernel_takes_every_rank():
    assert sorted(RANKED_CASES) == sorted(set(LAYER_CASES) - {"selective_kernel"})
    for cls in (BAMChannelGate, BAMSpatialGate):
        assert cls.SUPPORTED_RANKS == (3, 4, 5)


@RANKS
@pytest.mark.parametrize("case", sorted(RANKED_CASES))
def test_layer_contract(rank, case, tmp_path):
    cls, init_kwargs = LAYER_CASES[case]
    run_layer_test(cls, init_kwargs, tmp_path, input_shape=SHAPES[rank])
