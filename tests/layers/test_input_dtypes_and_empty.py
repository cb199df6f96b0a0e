"""Integer inputs compute in the layer's float compute dtype, as Keras' Dense does, and an empty
batch gives empty outputs of the right shapes, as Keras' Dense and BatchNormalization do."""

import keras
import numpy as np
import pytest
from layer_testing import INPUT_SHAPE, LAYER_CASES, randomize_weights, to_numpy

CASES = pytest.mark.parametrize("case", sorted(LAYER_CASES))


def _built(case, input_shape=INPUT_SHAPE):
    cls, init_kwargs = LAYER_CASES[case]
    layer = cls(**init_kwargs)
    layer.build(input_shape)
    randomize_weights(layer)
    return layer


@CASES
@pytest.mark.parametrize("dtype", ["int32", "uint8", "bool"])
def test_integer_inputs_compute_in_float(case, dtype):
    layer = _built(case)
    x = np.random.default_rng(0).integers(0, 4, INPUT_SHAPE).astype(dtype)
    y, scores = layer(x, training=False, return_attention_scores=True)
    expected, expected_scores = layer(
        x.astype("float32"), training=False, return_attention_scores=True
    )
    assert keras.backend.standardize_dtype(y.dtype) == "float32"
    np.testing.assert_allclose(to_numpy(y), to_numpy(expected), atol=1e-6)
    keras.tree.map_structure(
        lambda a, b: np.testing.assert_allclose(to_numpy(a), to_numpy(b), atol=1e-6),
        scores,
        expected_scores,
    )


@CASES
def test_integer_symbolic_input_gives_float_output(case):
    cls, init_kwargs = LAYER_CASES[case]
    inputs = keras.Input(INPUT_SHAPE[1:], dtype="int32")
    layer = cls(**init_kwargs)
    model = keras.Model(inputs, layer(inputs))
    assert model.output.dtype == "float32"
    x = np.random.default_rng(0).integers(-3, 4, INPUT_SHAPE).astype("int32")
    y = model.predict(x, verbose=0)
    assert y.dtype == np.float32
    expected = to_numpy(layer(x.astype("float32"), training=False))
    np.testing.assert_allclose(y, expected, atol=1e-6)


@CASES
def test_integer_inputs_follow_the_dtype_policy(case):
    cls, init_kwargs = LAYER_CASES[case]
    layer = cls(dtype="float16", **init_kwargs)
    x = np.random.default_rng(0).integers(-3, 4, INPUT_SHAPE).astype("int32")
    assert keras.backend.standardize_dtype(layer(x).dtype) == "float16"


@CASES
def test_empty_batch_gives_empty_outputs(case):
    layer = _built(case)
    x = np.zeros((0, *INPUT_SHAPE[1:]), "float32")
    y, scores = layer(x, training=False, return_attention_scores=True)
    assert tuple(y.shape) == layer.compute_output_shape(x.shape)
    assert keras.backend.standardize_dtype(y.dtype) == "float32"
    expected = layer.compute_attention_scores_shape(x.shape)
    assert keras.tree.map_structure(lambda t: tuple(t.shape), scores) == expected
    assert tuple(layer(x, training=True).shape) == tuple(y.shape)


@pytest.mark.parametrize("shape", [(0, 11, 8), (0, 3, 4, 5, 8)])
@pytest.mark.parametrize(
    "case", sorted(n for n, (cls, _) in LAYER_CASES.items() if 3 in cls.SUPPORTED_RANKS)
)
def test_empty_batch_of_1d_and_3d_maps(case, shape):
    layer = _built(case, shape)
    y = layer(np.zeros(shape, "float32"))
    assert tuple(y.shape) == layer.compute_output_shape(shape)
