"""The layers keras_attn finds inside a model (for the export-time swaps): this reads Keras's
private record of a plain layer's sub-layers, so these tests fail if a Keras release changes it."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import keras_attn  # noqa: E402
from keras_attn._keras_internals import nested_layers, sublayers  # noqa: E402
from keras_attn.export._int8_forms import int8_forms  # noqa: E402


class GatedBlock(keras.layers.Layer):
    """A user's block holding one attention layer as an attribute and two convolutions in a list."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.convs = [keras.layers.Conv2D(4, 3, padding="same") for _ in range(2)]
        self.attention = keras_attn.CBAM(reduction_ratio=2)

    def call(self, x):
        return self.attention(self.convs[1](self.convs[0](x))) + x


def _model():
    inner_inputs = keras.Input((6, 6, 4))
    inner = keras.Model(inner_inputs, GatedBlock(name="block")(inner_inputs), name="inner")
    inputs = keras.Input((6, 6, 4))
    shared = keras_attn.SpatialAttention(name="shared")
    h = shared(inner(shared(inputs)))
    return keras.Model(inputs, h)


def test_sublayers_of_a_plain_layer_are_its_layer_attributes():
    cbam = keras_attn.CBAM(reduction_ratio=2)
    assert sublayers(cbam) == [cbam.channel_attention, cbam.spatial_attention]
    block = GatedBlock()
    assert sublayers(block) == [*block.convs, block.attention]


def test_nested_layers_reach_into_sub_models_and_layer_attributes_once_each():
    model = _model()
    found = nested_layers(model)
    names = [layer.name for layer in found]
    assert names.count("shared") == 1  # called twice, listed once
    inner = model.get_layer("inner")
    block = inner.get_layer("block")
    cbam = block.attention
    for layer in (inner, block, *block.convs, cbam, cbam.channel_attention,
                  cbam.spatial_attention):
        assert any(layer is f for f in found), layer.name
    position = {id(layer): i for i, layer in enumerate(found)}
    assert position[id(inner)] < position[id(block)] < position[id(cbam)] \
        < position[id(cbam.spatial_attention)]
    assert model not in found


def test_int8_forms_swap_the_gates_nested_in_a_users_block():
    model = _model()
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 4)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x))
    cbam = model.get_layer("inner").get_layer("block").attention
    with int8_forms(model) as swapped:
        assert swapped == 2  # the shared gate and the CBAM's, deep inside the block
        assert "call" in vars(cbam.spatial_attention)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), expected, atol=1e-5)
    assert "call" not in vars(cbam.spatial_attention)
