"""keras_attn.cpu.compile: the fused Rust blocks against the Keras layers in inference mode."""

import numpy as np
import pytest

import keras_attn
from keras_attn import cpu, kernels

LAYOUTS = ("channels_last", "channels_first")


def randomized(layer, x, seed=0):
    """`layer` built on `x` with random weights, BatchNorm statistics included."""
    layer(x)
    rng = np.random.default_rng(seed)
    for variable in layer.weights:
        if "variance" in variable.path:
            value = rng.uniform(0.5, 1.5, variable.shape)
        else:
            value = rng.normal(0.0, 0.5, variable.shape)
        variable.assign(value.astype("float32"))
    return layer


def random_input(data_format, n=2, h=9, w=11, c=32, seed=1):
    shape = (n, h, w, c) if data_format == "channels_last" else (n, c, h, w)
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


LAYERS = {
    "cbam": lambda f: keras_attn.CBAM(reduction_ratio=8, data_format=f),
    "cbam_no_spatial": lambda f: keras_attn.CBAM(reduction_ratio=8, spatial=False, data_format=f),
    "cbam_k3_no_bn": lambda f: keras_attn.CBAM(kernel_size=3, use_batchnorm=False, data_format=f),
    "channel_avg": lambda f: keras_attn.ChannelAttention(reduction_ratio=4, pool_types=("avg",), data_format=f),
    "channel_max": lambda f: keras_attn.ChannelAttention(reduction_ratio=4, pool_types="max", data_format=f),
    "spatial": lambda f: keras_attn.SpatialAttention(data_format=f),
    "squeeze_excite": lambda f: keras_attn.SqueezeExcite(reduction_ratio=4, data_format=f),
    "bam_sum": lambda f: keras_attn.BAM(reduction_ratio=4, data_format=f),
    "bam_product": lambda f: keras_attn.BAM(reduction_ratio=4, fusion="product", data_format=f),
    "bam_two_layers": lambda f: keras_attn.BAM(
        reduction_ratio=8, num_layers=2, num_dilated_convs=1, dilation_rate=2, data_format=f
    ),
}


@pytest.mark.parametrize("data_format", LAYOUTS)
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_compiled_block_matches_keras(name, data_format):
    x = random_input(data_format)
    layer = randomized(LAYERS[name](data_format), x)
    run = cpu.compile(layer)
    want = np.asarray(layer(x, training=False))
    got = run(x)
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("data_format", LAYOUTS)
def test_cbam_on_a_resnet_sized_map_at_every_simd_level_and_thread_count(data_format):
    # 2**20 elements: two threads split the work inside the image.
    x = random_input(data_format, n=1, h=64, w=64, c=256, seed=2)
    layer = randomized(keras_attn.CBAM(reduction_ratio=16, data_format=data_format), x, seed=3)
    want = np.asarray(layer(x, training=False))
    run = cpu.compile(layer)
    for level in kernels.simd_levels():
        for threads in (1, 2):
            np.testing.assert_allclose(run(x, threads, _simd=level), want, atol=1e-5, rtol=1e-5)


def test_bam_on_a_resnet_sized_map():
    x = random_input("channels_last", n=2, h=28, w=28, c=128, seed=4)
    layer = randomized(keras_attn.BAM(data_format="channels_last"), x, seed=5)
    np.testing.assert_allclose(cpu.compile(layer)(x), np.asarray(layer(x, training=False)), atol=1e-5, rtol=1e-5)


def test_float64_and_non_contiguous_input_are_converted():
    x = random_input("channels_last")
    layer = randomized(keras_attn.CBAM(reduction_ratio=8), x)
    run = cpu.compile(layer)
    want = run(x)
    np.testing.assert_allclose(run(x.astype(np.float64)), want, atol=1e-6)
    flipped = x[:, ::-1]
    np.testing.assert_allclose(run(flipped), run(np.ascontiguousarray(flipped)), atol=0)


def test_channel_count_mismatch_is_an_error():
    layer = randomized(keras_attn.CBAM(reduction_ratio=8), random_input("channels_last"))
    with pytest.raises(ValueError, match=r"`x` must have 32 channels .* got shape \(2, 9, 11, 16\)"):
        cpu.compile(layer)(random_input("channels_last", c=16))


def test_unbuilt_layer_is_an_error():
    with pytest.raises(ValueError, match="needs a built layer"):
        cpu.compile(keras_attn.CBAM())


def test_unsupported_layer_is_an_error():
    with pytest.raises(TypeError, match="supports CBAM, ChannelAttention, .* got ECA"):
        cpu.compile(keras_attn.ECA())


def test_unsupported_pool_type_is_an_error():
    layer = randomized(keras_attn.ChannelAttention(pool_types=("avg", "lse")), random_input("channels_last"))
    with pytest.raises(ValueError, match=r"pool_types made of 'avg' and 'max'.* \('avg', 'lse'\)"):
        cpu.compile(layer)


def test_bad_input_is_an_error():
    layer = randomized(keras_attn.SqueezeExcite(), random_input("channels_last"))
    with pytest.raises(TypeError, match="floating-point array"):
        cpu.compile(layer)(np.ones((2, 9, 11, 32), np.int8))


# channels_last shapes of 1D and 3D maps
RANKED_SHAPES = {3: (2, 13, 32), 5: (2, 3, 4, 5, 32)}
CHANNEL_GATES = ("cbam_no_spatial", "channel_avg", "channel_max", "squeeze_excite")


@pytest.mark.parametrize("data_format", LAYOUTS)
@pytest.mark.parametrize("rank", sorted(RANKED_SHAPES))
@pytest.mark.parametrize("name", CHANNEL_GATES)
def test_channel_gates_compile_for_1d_and_3d_maps(name, rank, data_format):
    x = np.random.default_rng(1).normal(size=RANKED_SHAPES[rank]).astype(np.float32)
    if data_format == "channels_first":
        x = np.ascontiguousarray(np.moveaxis(x, -1, 1))
    layer = randomized(LAYERS[name](data_format), x)
    run = cpu.compile(layer)
    got = run(x)
    assert got.shape == x.shape
    np.testing.assert_allclose(got, np.asarray(layer(x, training=False)), atol=1e-5, rtol=1e-5)
    message = rf"`x` must be a {rank}-D map .*; got shape \(2, 5, 5, 32\)"
    with pytest.raises(ValueError, match=message):
        run(np.zeros((2, 5, 5, 32), np.float32))


@pytest.mark.parametrize("rank", sorted(RANKED_SHAPES))
@pytest.mark.parametrize("name", ["cbam", "spatial", "bam_sum"])
def test_spatial_gates_on_1d_and_3d_maps_are_refused(name, rank):
    layer = LAYERS[name]("channels_last")
    layer.build(RANKED_SHAPES[rank])
    message = rf"runs \w+ on 2D maps \(4-D inputs\) only; .* built for {rank}-D inputs"
    with pytest.raises(ValueError, match=message):
        cpu.compile(layer)
