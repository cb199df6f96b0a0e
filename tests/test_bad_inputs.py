"""Inputs a careless caller gives: unaligned arrays, absurd thread counts, repeated pool
types. Each is either accepted as it should be or refused with an error naming the argument."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import keras_attn  # noqa: E402
from keras_attn import cpu, kernels  # noqa: E402


def _unaligned(shape):
    """A C-contiguous float32 array whose data is not 4-byte aligned."""
    count = int(np.prod(shape))
    raw = np.zeros(4 * count + 1, np.uint8)
    a = np.frombuffer(raw.data, np.float32, count, offset=1).reshape(shape)
    a.flags.writeable = True  # a view of `raw`, which is writeable
    a[...] = np.random.default_rng(0).normal(size=shape)
    assert a.flags.c_contiguous and not a.flags.aligned
    return a


def test_unaligned_c_contiguous_arrays_are_accepted():
    x = _unaligned((2, 5, 4, 6))
    aligned = np.array(x)
    mean, max_ = kernels.channel_pool(x)
    np.testing.assert_array_equal(mean, kernels.channel_pool(aligned)[0])
    np.testing.assert_array_equal(max_, kernels.channel_pool(aligned)[1])
    layer = keras_attn.CBAM(reduction_ratio=2)
    layer(aligned)
    block = cpu.compile(layer)
    np.testing.assert_array_equal(block(x), block(aligned))


@pytest.mark.parametrize("threads", [2**64, 10**6])
def test_absurd_thread_counts_name_the_argument(threads):
    x = np.zeros((1, 3, 3, 2), np.float32)
    with pytest.raises(ValueError, match=r"`threads` must be a positive int or None .*at most 4096"):
        kernels.channel_pool(x, threads=threads)
    layer = keras_attn.SqueezeExcite(reduction_ratio=2)
    layer(x)
    with pytest.raises(ValueError, match="`threads`"):
        cpu.compile(layer, threads=threads)
    with pytest.raises(ValueError, match="`threads`"):
        cpu.compile(layer)(x, threads=threads)


def test_repeated_pool_types_follow_one_rule():
    message = r"`pool_types` must name each pool type at most once; .*\(repeated: \('avg',\)\)"
    with pytest.raises(ValueError, match=message):
        keras_attn.ChannelAttention(pool_types=("avg", "max", "avg"))
    layer = keras_attn.ChannelAttention(reduction_ratio=2, pool_types=("avg", "max"))
    layer(np.zeros((1, 3, 3, 4), np.float32))
    layer.pool_types = ("avg", "avg")  # set after the checks of __init__
    with pytest.raises(ValueError, match=message):
        cpu.compile(layer)
