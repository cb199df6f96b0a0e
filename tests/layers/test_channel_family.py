"""SqueezeExcite, SelectiveKernel and ECA against the NumPy reference of the papers."""

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

from keras_attn import ECA, SelectiveKernel, SqueezeExcite
from keras_attn.layers.eca import eca_kernel_size

ATOL = 1e-5


def _built(layer, x):
    layer.build(x.shape)
    randomize_weights(layer)
    return layer


def test_squeeze_excite_matches_reference():
    x = random_input()
    layer = _built(SqueezeExcite(reduction_ratio=2), x)
    reduce, expand = torch_linear(layer.reduce), torch_linear(layer.expand)
    expected = reference.squeeze_excite(
        to_channels_first(x), reduce["w"], reduce["b"], expand["w"], expand["b"]
    )
    np.testing.assert_allclose(to_channels_first(to_numpy(layer(x))), expected, atol=ATOL)


@pytest.mark.parametrize("filters, groups", [(None, 1), (6, 2)])
def test_selective_kernel_matches_reference(filters, groups):
    x = random_input((2, 7, 9, 8))
    layer = SelectiveKernel(filters=filters, reduction_ratio=2, min_units=4, groups=groups)
    layer = _built(layer, x)
    y, weights = layer(x, training=False, return_attention_scores=True)
    branches = [
        (torch_conv(conv)["w"], torch_bn(bn))
        for conv, bn in zip(layer.branch_convs, layer.branch_bns)
    ]
    expected, expected_weights = reference.selective_kernel(
        to_channels_first(x),
        branches,
        torch_linear(layer.fuse_dense)["w"],
        torch_bn(layer.fuse_bn),
        [torch_linear(dense) for dense in layer.select_dense],
        groups=groups,
    )
    np.testing.assert_allclose(to_channels_first(to_numpy(y)), expected, atol=ATOL)
    np.testing.assert_allclose(to_numpy(weights), expected_weights, atol=ATOL)


def test_selective_kernel_fuse_width_is_at_least_min_units():
    layer = SelectiveKernel(reduction_ratio=2, min_units=32)
    layer.build((None, None, None, 8))
    assert layer.fuse_dense.units == 32
    layer = SelectiveKernel(reduction_ratio=2, min_units=2)
    layer.build((None, None, None, 8))
    assert layer.fuse_dense.units == 4


@pytest.mark.parametrize("kernel_size", [None, 5])
def test_eca_matches_reference(kernel_size):
    x = random_input((2, 5, 7, 16))
    layer = _built(ECA(kernel_size=kernel_size), x)
    weight = to_numpy(layer.conv.kernel)[:, 0, 0]
    assert len(weight) == (kernel_size or eca_kernel_size(16))
    expected = reference.eca(to_channels_first(x), weight)
    np.testing.assert_allclose(to_channels_first(to_numpy(layer(x))), expected, atol=ATOL)


@pytest.mark.parametrize(
    "channels, size", [(8, 3), (16, 3), (64, 3), (128, 5), (256, 5), (512, 5), (2048, 7)]
)
def test_eca_adaptive_kernel_size(channels, size):
    # k = |(log2(C) + 1) / 2| truncated, then made odd: the ECA-Net paper's rule.
    assert eca_kernel_size(channels) == size
