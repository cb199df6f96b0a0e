"""NaN and infinity through `keras_attn.cpu.compile`: the compiled block's non-finite outputs
are exactly the Keras layer's (same NaN mask, same infinity mask), for a NaN or an infinity in
the map, values near the float32 maximum, a NaN weight of the channel MLP, and a NaN or an
infinity in a spatial convolution's kernel (where TensorFlow's convolution sums only the taps
that read the image, and its dilated convolutions read zero padding)."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import keras_attn  # noqa: E402
from keras_attn import cpu  # noqa: E402

LAYERS = {
    "cbam": lambda: keras_attn.CBAM(reduction_ratio=2),
    "se": lambda: keras_attn.SqueezeExcite(reduction_ratio=2),
    "bam": lambda: keras_attn.BAM(reduction_ratio=2),
    "channel_max": lambda: keras_attn.ChannelAttention(reduction_ratio=2, pool_types=("max",)),
    "spatial": lambda: keras_attn.SpatialAttention(),
}


def _map(case):
    x = np.random.default_rng(0).normal(size=(2, 9, 7, 16)).astype(np.float32)
    if case == "nan":
        x[0, 3, 2, 5] = np.nan
    elif case == "inf":
        x[0, 3, 2, 5] = np.inf
        x[1, 1, 1, 1] = -np.inf
    elif case == "near_max":  # sums over these overflow in float32
        x[0, 3, 2, :] = 3.3e38
        x[1, :, 4, 7] = -3.0e38
    return x


def _assert_same_non_finite(got, want):
    for name, test in [("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)]:
        np.testing.assert_array_equal(test(got), test(want), err_msg=f"{name} mask")
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("case", ["nan", "inf", "near_max"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_non_finite_inputs_match_keras(name, case, seed):
    keras.utils.set_random_seed(seed)
    layer = LAYERS[name]()
    x = _map(case)
    layer(x)
    want = np.asarray(layer(x, training=False))
    assert case == "near_max" or not np.isfinite(want).all()
    _assert_same_non_finite(cpu.compile(layer)(x), want)


@pytest.mark.parametrize("name", ["cbam", "se", "bam", "channel_max"])
def test_a_nan_weight_matches_keras(name):
    layer = LAYERS[name]()
    x = _map("finite")
    layer(x)
    # The first weight of each of these layers is its channel MLP's first kernel.
    kernel = layer.weights[0]
    values = kernel.numpy()
    values.flat[0] = np.nan
    kernel.assign(values)
    want = np.asarray(layer(x, training=False))
    assert np.isnan(want).any()
    _assert_same_non_finite(cpu.compile(layer)(x), want)


SPATIAL_KERNELS = {
    # layer, the kernel's path suffix
    "cbam": (lambda: keras_attn.CBAM(reduction_ratio=2), "spatial_attention/conv/kernel"),
    "spatial": (lambda: keras_attn.SpatialAttention(kernel_size=5), "conv/kernel"),
    "bam_undilated": (
        lambda: keras_attn.BAM(reduction_ratio=2, num_dilated_convs=1, dilation_rate=1),
        "dilated_conv_0/kernel",
    ),
    "bam_dilated": (
        lambda: keras_attn.BAM(reduction_ratio=2, num_dilated_convs=1, dilation_rate=2),
        "dilated_conv_0/kernel",
    ),
}


def set_weight(layer, suffix, index, value):
    """Sets element `index` of the layer's weight whose path ends with `suffix` to `value`."""
    (weight,) = [w for w in layer.weights if w.path.endswith(suffix)]
    values = weight.numpy()
    values[index] = value
    weight.assign(values)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("tap", ["corner", "centre"])
@pytest.mark.parametrize("name", list(SPATIAL_KERNELS))
def test_a_non_finite_spatial_conv_weight_matches_keras(name, tap, value):
    keras.utils.set_random_seed(0)
    make, suffix = SPATIAL_KERNELS[name]
    layer = make()
    x = _map("finite")
    layer(x)
    (weight,) = [w for w in layer.weights if w.path.endswith(suffix)]
    size = weight.shape[0]
    index = (0, 0, 0, 0) if tap == "corner" else (size // 2, size // 2, 1, 0)
    set_weight(layer, suffix, index, value)
    want = np.asarray(layer(x, training=False))
    if tap == "corner" and name != "bam_dilated":
        # The weight meets the zero padding on two borders, where Keras skips it: a product
        # with the padding would make those borders NaN.
        assert not np.isnan(want).all()
    _assert_same_non_finite(cpu.compile(layer)(x), want)
