"""The behaviour every attention layer shares: serialization, training, saving, data formats,
dynamic sizes, mixed precision and attention scores."""

import keras
import numpy as np
import pytest
from layer_testing import (
    INPUT_SHAPE,
    LAYER_CASES,
    random_input,
    randomize_weights,
    run_layer_test,
    to_channels_first,
    to_channels_last,
    to_numpy,
)

CASES = pytest.mark.parametrize("case", sorted(LAYER_CASES))


@CASES
def test_layer_contract(case, tmp_path):
    cls, init_kwargs = LAYER_CASES[case]
    run_layer_test(cls, init_kwargs, tmp_path)


def _scores_to_numpy(scores, transpose=None):
    def convert(t):
        t = to_numpy(t)
        return transpose(t) if transpose is not None and t.ndim == 4 else t

    return keras.tree.map_structure(convert, scores)


@CASES
def test_channels_first_matches_channels_last(case):
    cls, init_kwargs = LAYER_CASES[case]
    x = random_input()
    last = cls(data_format="channels_last", **init_kwargs)
    last.build(x.shape)
    randomize_weights(last)
    first = cls(data_format="channels_first", **init_kwargs)
    first.build(to_channels_first(x).shape)
    first.set_weights(last.get_weights())

    y_last, scores_last = last(x, training=False, return_attention_scores=True)
    y_first, scores_first = first(
        to_channels_first(x), training=False, return_attention_scores=True
    )
    np.testing.assert_allclose(to_channels_last(to_numpy(y_first)), to_numpy(y_last), atol=1e-5)
    keras.tree.map_structure(
        lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
        _scores_to_numpy(scores_first, to_channels_last),
        _scores_to_numpy(scores_last),
    )


# Values around 20 over 64x64 positions: the sums behind "avg" (~8e4) and "lp" (~2e6) overflow
# float16 (max 65504) unless the layer reduces in float32.
MIXED_SHAPE = (2, 64, 64, 8)


@CASES
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(case, policy):
    cls, init_kwargs = LAYER_CASES[case]
    x = 20.0 + random_input(MIXED_SHAPE)
    reference = cls(**init_kwargs)
    reference.build(x.shape)
    randomize_weights(reference, scale=0.2)
    expected, expected_scores = reference(x, training=False, return_attention_scores=True)

    keras.config.set_dtype_policy(policy)
    layer = cls(**init_kwargs)
    layer.build(x.shape)
    layer.set_weights(reference.get_weights())
    y, scores = layer(x, training=False, return_attention_scores=True)
    compute_dtype = keras.config.dtype_policy().compute_dtype
    assert keras.backend.standardize_dtype(y.dtype) == compute_dtype
    for score in keras.tree.flatten(scores):
        assert keras.backend.standardize_dtype(score.dtype) == compute_dtype
    y = to_numpy(keras.ops.cast(y, "float32"))
    assert np.isfinite(y).all()
    expected = to_numpy(expected)
    tolerance = 2e-2 * np.abs(expected).max()
    np.testing.assert_allclose(y, expected, rtol=2e-2, atol=tolerance)


@CASES
def test_attention_scores_shapes(case):
    cls, init_kwargs = LAYER_CASES[case]
    layer = cls(**init_kwargs)
    x = random_input()
    y, scores = layer(x, return_attention_scores=True)
    expected = layer.compute_attention_scores_shape(x.shape)
    actual = keras.tree.map_structure(lambda t: tuple(t.shape), scores)
    assert keras.tree.map_shape_structure(tuple, expected) == actual
    assert y.shape == layer.compute_output_shape(x.shape)

    symbolic = keras.Input((None, None, INPUT_SHAPE[3]))
    y_sym, scores_sym = layer(symbolic, return_attention_scores=True)
    dynamic = layer.compute_attention_scores_shape(symbolic.shape)
    assert keras.tree.map_structure(lambda t: tuple(t.shape), scores_sym) == dynamic
    assert y_sym.shape == layer.compute_output_shape(symbolic.shape)


@pytest.mark.tf_only
@pytest.mark.parametrize("case", ["cbam", "bam", "selective_kernel"])
def test_tf_graph_with_unknown_height_and_width_and_xla(case):
    import tensorflow as tf

    cls, init_kwargs = LAYER_CASES[case]
    layer = cls(**init_kwargs)
    x = random_input()
    expected = to_numpy(layer(x, training=False))
    signature = [tf.TensorSpec((None, None, None, INPUT_SHAPE[3]), tf.float32)]
    graph = tf.function(lambda t: layer(t, training=False), input_signature=signature)
    np.testing.assert_allclose(graph(x).numpy(), expected, atol=1e-6)
    x_other = random_input((1, 9, 3, INPUT_SHAPE[3]))
    assert tuple(graph(x_other).shape) == layer.compute_output_shape(x_other.shape)
    xla = tf.function(lambda t: layer(t, training=False), jit_compile=True)
    np.testing.assert_allclose(xla(x).numpy(), expected, atol=1e-5)


@CASES
def test_sub_layers_start_from_different_weights(case):
    # Twin sub-layers (BAM's dilated convs, SK's branches) that started equal would stay equal.
    cls, init_kwargs = LAYER_CASES[case]
    layer = cls(**init_kwargs)
    layer.build(INPUT_SHAPE)
    kernels = [to_numpy(v) for v in layer.weights if v.name == "kernel"]
    for i, first in enumerate(kernels):
        for second in kernels[i + 1 :]:
            if first.shape == second.shape:
                assert not np.array_equal(first, second)


@CASES
def test_data_format_defaults_to_keras_image_data_format(case):
    cls, init_kwargs = LAYER_CASES[case]
    assert cls(**init_kwargs).data_format == "channels_last"
    keras.config.set_image_data_format("channels_first")
    try:
        layer = cls(**init_kwargs)
    finally:
        keras.config.set_image_data_format("channels_last")
    assert layer.data_format == "channels_first"
    assert layer.get_config()["data_format"] == "channels_first"
