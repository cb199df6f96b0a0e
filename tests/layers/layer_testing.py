"""Reusable checks of the attention layers, in the style of keras-hub's `run_layer_test`."""

import keras
import numpy as np

from keras_attn import (
    BAM,
    CBAM,
    ECA,
    BAMChannelGate,
    BAMSpatialGate,
    ChannelAttention,
    SelectiveKernel,
    SpatialAttention,
    SqueezeExcite,
)

# (batch, height, width, channels): tiny and non-square, so that a swapped H and W shows.
INPUT_SHAPE = (2, 5, 7, 8)
# A second spatial size per input rank, for the (None, ..., C) checks; non-square for rank 4.
OTHER_SPATIAL = {3: (6,), 4: (6, 4), 5: (3, 6, 4)}

# One small configuration per layer that exercises its non-default paths.
LAYER_CASES = {
    "channel_attention": (
        ChannelAttention,
        dict(reduction_ratio=2, pool_types=("avg", "max", "lp", "lse")),
    ),
    "spatial_attention": (SpatialAttention, dict(kernel_size=3)),
    "cbam": (CBAM, dict(reduction_ratio=2, kernel_size=3)),
    "bam_channel_gate": (BAMChannelGate, dict(reduction_ratio=2, num_layers=2)),
    "bam_spatial_gate": (BAMSpatialGate, dict(reduction_ratio=2, dilation_rate=2)),
    "bam": (BAM, dict(reduction_ratio=2, num_layers=2, fusion="product")),
    "squeeze_excite": (SqueezeExcite, dict(reduction_ratio=2)),
    "selective_kernel": (
        SelectiveKernel,
        dict(filters=6, reduction_ratio=2, min_units=4, groups=2),
    ),
    "eca": (ECA, dict(kernel_size=3)),
}


# Biases that feed a BatchNormalization (as in the authors' BAM) get an exactly-zero gradient in
# training mode: the batch mean cancels them. They are the only variables a step may leave alone.
_BIASES_BEFORE_BATCHNORM = ("hidden_dense", "reduce_conv", "dilated_conv")


def must_change(variable):
    return not (
        variable.name == "bias" and any(s in variable.path for s in _BIASES_BEFORE_BATCHNORM)
    )


def to_numpy(x):
    if isinstance(x, keras.Variable):
        x = x.value
    return keras.ops.convert_to_numpy(x)


def random_input(shape=INPUT_SHAPE, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def to_channels_first(x):
    return np.moveaxis(x, -1, 1)


def to_channels_last(x):
    return np.moveaxis(x, 1, -1)


def randomize_weights(layer, seed=0, scale=0.5):
    """Gives every variable (BatchNorm statistics included) random, non-trivial values."""
    rng = np.random.default_rng(seed)
    for variable in layer.weights:
        shape = tuple(variable.shape)
        if variable.name in ("gamma", "moving_variance"):
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = scale * rng.standard_normal(shape)
        variable.assign(value.astype(variable.dtype))


# Keras weights in the PyTorch layouts of tests/reference.py.
def torch_linear(dense):
    params = {"w": to_numpy(dense.kernel).T}
    if dense.use_bias:
        params["b"] = to_numpy(dense.bias)
    return params


def torch_conv(conv):
    # Keras (*kernel, in, out) -> PyTorch (out, in, *kernel), for 1D, 2D and 3D.
    params = {"w": np.moveaxis(to_numpy(conv.kernel), (-1, -2), (0, 1))}
    if conv.use_bias:
        params["b"] = to_numpy(conv.bias)
    return params


def torch_bn(bn):
    return {
        "gamma": to_numpy(bn.gamma),
        "beta": to_numpy(bn.beta),
        "mean": to_numpy(bn.moving_mean),
        "var": to_numpy(bn.moving_variance),
    }


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


def check_serialization(cls, init_kwargs):
    layer = cls(**init_kwargs)
    config = layer.get_config()
    for key, value in init_kwargs.items():
        assert config[key] == _jsonable(value), key
    assert cls.from_config(config).get_config() == config
    assert keras.saving.get_registered_name(cls) == f"keras_attn>{cls.__name__}"
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is cls
    assert restored.get_config() == config


def run_layer_test(cls, init_kwargs, tmp_path, input_shape=INPUT_SHAPE):
    """Serialization, eager and symbolic calls, `model.add` in a Sequential with (None, ..., C)
    input, one training step that moves every variable, two spatial sizes, and `.keras`
    save -> load with identical outputs. `input_shape` is channels_last, of rank 3, 4 or 5."""
    check_serialization(cls, init_kwargs)
    x = random_input(input_shape)
    rank, channels = len(input_shape), input_shape[-1]
    other_shape = (input_shape[0], *OTHER_SPATIAL[rank], channels)
    x_other = random_input(other_shape, seed=1)

    eager = cls(**init_kwargs)
    y = to_numpy(eager(x))
    assert y.shape == eager.compute_output_shape(x.shape)
    assert y.dtype == np.float32 and np.isfinite(y).all()

    unknown_spatial = (None,) * (rank - 2)
    model = keras.Sequential([keras.Input((*unknown_spatial, channels))])
    model.add(cls(**init_kwargs))
    expected = cls(**init_kwargs).compute_output_shape((None, *unknown_spatial, channels))
    assert model.output_shape == expected

    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    before = [to_numpy(v).copy() for v in model.weights]
    # A batch of 4: with 2, a BatchNormalization over vectors outputs +-1 whatever its input, and
    # the gradient before it vanishes.
    x_train = random_input((4, *input_shape[1:]), seed=3)
    target = random_input(eager.compute_output_shape(x_train.shape), seed=2)
    model.fit(x_train, target, batch_size=4, epochs=1, verbose=0)
    for variable, old in zip(model.weights, before):
        if must_change(variable):
            assert not np.array_equal(to_numpy(variable), old), f"{variable.path} did not change"

    y_other = model.predict(x_other, verbose=0)
    assert y_other.shape == cls(**init_kwargs).compute_output_shape(other_shape)

    path = tmp_path / f"{cls.__name__}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.layers[-1]) is cls
    assert loaded.layers[-1].get_config() == model.layers[-1].get_config()
    for inputs in (x, x_other):
        np.testing.assert_array_equal(to_numpy(loaded(inputs)), to_numpy(model(inputs)))
