"""BAMChannelGate, BAMSpatialGate and BAM against the NumPy reference of the authors' code."""

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

from keras_attn import BAM, BAMChannelGate, BAMSpatialGate

ATOL = 1e-5
# Larger than the dilation of 4 in both directions, and non-square: the authors' code would pool
# a 9x9 window here instead of the whole 9x13 map.
SHAPE = (2, 9, 13, 8)


def _built(layer, x):
    layer.build(x.shape)
    randomize_weights(layer)  # BatchNorm moving statistics included
    return layer


def _channel_reference(gate, x):
    hidden = [(torch_linear(d), torch_bn(b)) for d, b in zip(gate.hidden_dense, gate.hidden_bn)]
    return reference.bam_channel_gate(to_channels_first(x), hidden, torch_linear(gate.output_dense))


def _spatial_reference(gate, x):
    dilated = [(torch_conv(c), torch_bn(b)) for c, b in zip(gate.dilated_convs, gate.dilated_bns)]
    return reference.bam_spatial_gate(
        to_channels_first(x),
        torch_conv(gate.reduce_conv),
        torch_bn(gate.reduce_bn),
        dilated,
        torch_conv(gate.output_conv),
        dilation=gate.dilation_rate,
    )


@pytest.mark.parametrize("num_layers", [1, 2])
def test_channel_gate_matches_reference(num_layers):
    x = random_input(SHAPE)
    gate = _built(BAMChannelGate(reduction_ratio=2, num_layers=num_layers), x)
    logits = to_numpy(gate(x, training=False))
    assert logits.shape == (2, 1, 1, 8)
    np.testing.assert_allclose(logits[:, 0, 0, :], _channel_reference(gate, x), atol=ATOL)


@pytest.mark.parametrize("num_dilated_convs, dilation_rate", [(2, 4), (1, 2)])
def test_spatial_gate_matches_reference(num_dilated_convs, dilation_rate):
    x = random_input(SHAPE)
    gate = BAMSpatialGate(
        reduction_ratio=2, num_dilated_convs=num_dilated_convs, dilation_rate=dilation_rate
    )
    gate = _built(gate, x)
    logits = gate(x, training=False)
    expected = _spatial_reference(gate, x)
    np.testing.assert_allclose(to_channels_first(to_numpy(logits)), expected, atol=ATOL)


@pytest.mark.parametrize("fusion", ["sum", "product"])
def test_bam_matches_reference(fusion):
    x = random_input(SHAPE)
    layer = _built(BAM(reduction_ratio=2, fusion=fusion), x)
    y, scores = layer(x, training=False, return_attention_scores=True)
    channel = _channel_reference(layer.channel_gate, x)
    spatial = _spatial_reference(layer.spatial_gate, x)
    expected = reference.bam(to_channels_first(x), channel, spatial, fusion)
    np.testing.assert_allclose(to_channels_first(to_numpy(y)), expected, atol=ATOL)
    np.testing.assert_allclose(to_numpy(y), x * (1 + to_numpy(scores["attention"])), atol=ATOL)
    channel_scores = to_numpy(scores["channel"])[:, 0, 0]
    np.testing.assert_allclose(channel_scores, reference.sigmoid(channel), atol=ATOL)


def test_fusions_differ():
    # Guards the fusion switch itself: the same weights give different outputs.
    x = random_input(SHAPE)
    summed = _built(BAM(reduction_ratio=2, fusion="sum"), x)
    product = BAM(reduction_ratio=2, fusion="product")
    product.build(x.shape)
    product.set_weights(summed.get_weights())
    y_sum, y_product = summed(x, training=False), product(x, training=False)
    assert not np.allclose(to_numpy(y_sum), to_numpy(y_product))
