"""ChannelAttention, SpatialAttention and CBAM against the NumPy reference of the authors' code."""

import numpy as np
import pytest
import reference
from layer_testing import (
    random_input,
    randomize_weights,
    to_channels_first,
    to_numpy,
    torch_bn,
    torch_conv,
    torch_linear,
)

from keras_attn import CBAM, ChannelAttention, SpatialAttention

ATOL = 1e-5


def _mlp(layer):
    hidden, output = torch_linear(layer.mlp_hidden), torch_linear(layer.mlp_output)
    return dict(w1=hidden["w"], b1=hidden["b"], w2=output["w"], b2=output["b"])


def _built(layer, x, **randomize_kwargs):
    layer.build(x.shape)
    randomize_weights(layer, **randomize_kwargs)
    return layer


def _nchw(t):
    return to_channels_first(to_numpy(t))


@pytest.mark.parametrize(
    "pool_types", [("avg",), ("max",), ("lp",), ("lse",), ("avg", "max", "lp", "lse")]
)
def test_channel_attention_matches_reference(pool_types):
    x = random_input()
    layer = _built(ChannelAttention(reduction_ratio=2, pool_types=pool_types), x)
    y, gate = layer(x, return_attention_scores=True)
    expected, scale = reference.cbam_channel_gate(to_channels_first(x), _mlp(layer), pool_types)
    np.testing.assert_allclose(_nchw(y), expected, atol=ATOL)
    np.testing.assert_allclose(to_numpy(gate)[:, 0, 0, :], scale, atol=ATOL)


def test_lse_pool_is_stable_for_large_inputs():
    x = 1000.0 + random_input()
    layer = _built(ChannelAttention(reduction_ratio=2, pool_types=("lse",)), x, scale=1e-3)
    y, gate = layer(x, return_attention_scores=True)
    expected, scale = reference.cbam_channel_gate(to_channels_first(x), _mlp(layer), ("lse",))
    assert np.isfinite(expected).all()  # the reference itself must not overflow
    assert np.isfinite(to_numpy(y)).all()
    np.testing.assert_allclose(to_numpy(gate)[:, 0, 0, :], scale, atol=ATOL)
    np.testing.assert_allclose(_nchw(y), expected, rtol=1e-5)


@pytest.mark.parametrize("kernel_size, use_batchnorm", [(7, True), (3, False)])
def test_spatial_attention_matches_reference(kernel_size, use_batchnorm):
    x = random_input()
    layer = _built(SpatialAttention(kernel_size=kernel_size, use_batchnorm=use_batchnorm), x)
    y, gate = layer(x, training=False, return_attention_scores=True)
    bn = torch_bn(layer.bn) if use_batchnorm else None
    conv_weight = torch_conv(layer.conv)["w"]
    expected, scale = reference.cbam_spatial_gate(to_channels_first(x), conv_weight, bn)
    np.testing.assert_allclose(_nchw(y), expected, atol=ATOL)
    np.testing.assert_allclose(_nchw(gate), scale, atol=ATOL)


@pytest.mark.parametrize("kernel, pooled", [((1.0, 0.0), "max"), ((0.0, 1.0), "mean")])
def test_spatial_attention_pools_max_then_mean(kernel, pooled):
    # A 1x1 kernel that reads only input channel 0 (or 1) exposes which pool sits there: with the
    # order swapped, each case gets the other pool and fails.
    x = random_input()
    layer = SpatialAttention(kernel_size=1, use_batchnorm=False)
    layer.build(x.shape)
    layer.conv.kernel.assign(np.array(kernel, "float32").reshape(1, 1, 2, 1))
    _, gate = layer(x, return_attention_scores=True)
    channel_pool = x.max(axis=-1) if pooled == "max" else x.mean(axis=-1)
    np.testing.assert_allclose(to_numpy(gate)[..., 0], reference.sigmoid(channel_pool), atol=ATOL)


@pytest.mark.parametrize("spatial", [True, False])
def test_cbam_matches_reference(spatial):
    x = random_input()
    layer = _built(CBAM(reduction_ratio=2, spatial=spatial), x)
    y, scores = layer(x, training=False, return_attention_scores=True)
    expected = reference.cbam(
        to_channels_first(x),
        _mlp(layer.channel_attention),
        torch_conv(layer.spatial_attention.conv)["w"] if spatial else None,
        torch_bn(layer.spatial_attention.bn) if spatial else None,
        no_spatial=not spatial,
    )
    np.testing.assert_allclose(_nchw(y), expected, atol=ATOL)
    assert sorted(scores) == (["channel", "spatial"] if spatial else ["channel"])
    product = x * to_numpy(scores["channel"])
    if spatial:
        product = product * to_numpy(scores["spatial"])
    np.testing.assert_allclose(to_numpy(y), product, atol=ATOL)


def test_cbam_training_flag_reaches_spatial_batchnorm():
    x = random_input()
    layer = _built(CBAM(reduction_ratio=2), x)
    inference = to_numpy(layer(x, training=False))
    np.testing.assert_array_equal(to_numpy(layer(x, training=False)), inference)
    assert not np.allclose(to_numpy(layer(x, training=True)), inference, atol=1e-3)
