"""keras_attn.kernels against NumPy: pooling and gate application in both layouts, every SIMD
level against the scalar path, NaN, long sums, threads, and every input error."""

import concurrent.futures
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_attn import _rust, kernels

LAYOUTS = ("channels_last", "channels_first")


def nhwc(x, data_format):
    """The map as NHWC, whatever its layout."""
    return x if data_format == "channels_last" else np.transpose(x, (0, 2, 3, 1))


def from_nhwc(x, data_format):
    return x if data_format == "channels_last" else np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))


def random_map(rng, n, h, w, c, data_format, scale=2.0):
    return from_nhwc(rng.uniform(-scale, scale, (n, h, w, c)).astype(np.float32), data_format)


def numpy_spatial_pool(x, data_format):
    x = nhwc(x, data_format).astype(np.float64)
    stacked = np.stack([x.max(axis=-1), x.mean(axis=-1)], axis=-1)
    return stacked if data_format == "channels_last" else np.transpose(stacked, (0, 3, 1, 2))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


shapes = st.tuples(
    st.integers(1, 3), st.integers(1, 12), st.integers(1, 12), st.integers(1, 70), st.sampled_from(LAYOUTS)
)


@settings(max_examples=25, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**32 - 1))
def test_pooling_matches_numpy(shape, seed):
    n, h, w, c, data_format = shape
    x = random_map(np.random.default_rng(seed), n, h, w, c, data_format)
    mean, max_ = kernels.channel_pool(x, data_format)
    x64 = nhwc(x, data_format).astype(np.float64)
    np.testing.assert_allclose(mean, x64.mean(axis=(1, 2)), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(max_, x64.max(axis=(1, 2)))
    np.testing.assert_allclose(
        kernels.spatial_pool(x, data_format), numpy_spatial_pool(x, data_format), rtol=1e-6, atol=1e-6
    )


@settings(max_examples=25, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**32 - 1), fusion=st.sampled_from(["sum", "product"]))
def test_gates_match_numpy(shape, seed, fusion):
    n, h, w, c, data_format = shape
    rng = np.random.default_rng(seed)
    x = random_map(rng, n, h, w, c, data_format)
    g = rng.uniform(-2, 2, (n, c)).astype(np.float32)
    s = rng.uniform(-2, 2, (n, h, w)).astype(np.float32)
    x64 = nhwc(x, data_format).astype(np.float64)
    g64, s64 = g[:, None, None, :].astype(np.float64), s[..., None].astype(np.float64)
    cases = [
        (kernels.apply_channel_gate(x, g, data_format), x64 * g64),
        (kernels.apply_spatial_gate(x, s, data_format), x64 * s64),
        (kernels.apply_gates(x, g, s, data_format), x64 * g64 * s64),
        (
            kernels.apply_bam(x, g, s, fusion, data_format),
            x64 * (1 + sigmoid(g64 + s64 if fusion == "sum" else g64 * s64)),
        ),
    ]
    for got, want in cases:
        assert got.dtype == np.float32 and got.shape == x.shape
        np.testing.assert_allclose(nhwc(got, data_format), want, rtol=1e-6, atol=1e-6)


def test_gates_accept_the_layers_map_shapes():
    rng = np.random.default_rng(0)
    x = random_map(rng, 2, 3, 4, 5, "channels_first")
    g = rng.uniform(size=(2, 5)).astype(np.float32)
    s = rng.uniform(size=(2, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(
        kernels.apply_gates(x, g[:, :, None, None], s[:, None], "channels_first"),
        kernels.apply_gates(x, g, s, "channels_first"),
    )


@pytest.mark.parametrize("data_format", LAYOUTS)
def test_every_simd_level_matches_scalar_on_odd_sizes(data_format):
    levels = kernels.simd_levels()
    assert levels[0] == "scalar" and kernels.simd_level() in levels
    rng = np.random.default_rng(1)
    for c, (h, w) in [(1, (56, 56)), (3, (1, 7)), (17, (56, 56)), (1000, (1, 1)), (1000, (1, 7))]:
        x = random_map(rng, 2, h, w, c, data_format)
        g = rng.uniform(size=(2, c)).astype(np.float32)
        s = rng.uniform(size=(2, h, w)).astype(np.float32)
        calls = {
            "channel_pool": lambda level: kernels.channel_pool(x, data_format, _simd=level),
            "spatial_pool": lambda level: kernels.spatial_pool(x, data_format, _simd=level),
            "apply_gates": lambda level: kernels.apply_gates(x, g, s, data_format, _simd=level),
            "apply_bam": lambda level: kernels.apply_bam(x, g, s, "sum", data_format, _simd=level),
        }
        for name, call in calls.items():
            scalar = call("scalar")
            for level in levels[1:]:
                for got, want in zip(np.atleast_1d(call(level)), np.atleast_1d(scalar)):
                    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=f"{name} {level}")


def _simd_level_in_subprocess(value):
    """`simd_level()` in a fresh process with KERAS_ATTN_SIMD=value, and its stderr.

    The extension is loaded alone (not through `keras_attn`, which imports TensorFlow) to keep
    the test fast.
    """
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('keras_attn._rust', {_rust.__file__!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "print(module.simd_level())\n"
    )
    env = dict(os.environ, KERAS_ATTN_SIMD=value)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip(), done.stderr


def test_env_var_forces_a_level_and_falls_back_with_a_message():
    assert _simd_level_in_subprocess("scalar") == ("scalar", "")
    level, message = _simd_level_in_subprocess("avx9000")
    assert level == kernels.simd_levels()[-1]
    assert "KERAS_ATTN_SIMD" in message and "unknown SIMD level" in message


def test_unavailable_forced_level_is_an_error():
    missing = "neon" if "avx2" in kernels.simd_levels() else "avx512"
    with pytest.raises(ValueError, match="not available on this CPU"):
        kernels.channel_pool(np.ones((1, 2, 2, 2), np.float32), _simd=missing)


@pytest.mark.parametrize("data_format", LAYOUTS)
def test_nan_propagates_like_numpy(data_format):
    x = nhwc(random_map(np.random.default_rng(2), 2, 5, 6, 7, data_format), data_format).copy()
    x[1, 2, 3, 4] = np.nan
    x[0, 0, 0, 1], x[0, 0, 1, 1] = np.inf, -np.inf
    mean, max_ = kernels.channel_pool(from_nhwc(x, data_format), data_format)
    assert np.isnan(mean[1, 4]) and np.isnan(max_[1, 4]) and np.isnan(mean[0, 1]) and max_[0, 1] == np.inf
    with np.errstate(invalid="ignore"):  # inf + -inf
        np.testing.assert_allclose(mean, x.mean(axis=(1, 2)), rtol=1e-6)
        np.testing.assert_array_equal(max_, x.max(axis=(1, 2)))
        np.testing.assert_allclose(
            nhwc(kernels.spatial_pool(from_nhwc(x, data_format), data_format), data_format),
            np.stack([x.max(axis=-1), x.mean(axis=-1)], axis=-1),
            rtol=1e-6,
        )


@pytest.mark.parametrize("data_format", LAYOUTS)
def test_long_means_stay_accurate(data_format):
    rng = np.random.default_rng(3)
    # 0.1 is inexact in binary: a naive float32 running sum over 50,176 values drifts by ~1e-4.
    x = from_nhwc((0.1 + 1e-3 * rng.standard_normal((1, 224, 224, 3))).astype(np.float32), data_format)
    mean, _ = kernels.channel_pool(x, data_format)
    want = nhwc(x, data_format).astype(np.float64).mean(axis=(1, 2))
    np.testing.assert_allclose(mean, want, rtol=4 * np.finfo(np.float32).eps)


def test_contiguous_float32_is_read_in_place_and_other_floats_are_converted():
    x = np.random.default_rng(4).uniform(size=(2, 6, 5, 4)).astype(np.float32)
    assert kernels.as_float32_map(x) is x
    for other in (x.astype(np.float64), x.astype(np.float16), np.asfortranarray(x), x[:, ::-1]):
        converted = kernels.as_float32_map(other)
        assert converted is not other and converted.dtype == np.float32 and converted.flags.c_contiguous
    mean, max_ = kernels.channel_pool(x[:, ::-1])
    np.testing.assert_allclose(mean, x.mean(axis=(1, 2)), rtol=1e-6)
    half_mean, _ = kernels.channel_pool(x.astype(np.float16))
    np.testing.assert_allclose(half_mean, x.astype(np.float16).astype(np.float64).mean(axis=(1, 2)), rtol=1e-6)


def test_threads_give_the_same_results():
    # 2**20 elements and more: two threads split the images, or the one image.
    rng = np.random.default_rng(5)
    maps = [random_map(rng, 2, 56, 56, 256, "channels_last"), random_map(rng, 1, 64, 64, 256, "channels_last")]
    for call in (kernels.channel_pool, kernels.spatial_pool):
        for image in maps:
            for got, want in zip(np.atleast_1d(call(image, threads=2)), np.atleast_1d(call(image, threads=1))):
                np.testing.assert_array_equal(got, want)


def test_eight_python_threads_at_once():
    rng = np.random.default_rng(6)
    jobs = []
    for i in range(8):
        data_format = LAYOUTS[i % 2]
        x = random_map(rng, 1 + i % 3, 28, 28, 32 + 8 * i, data_format)
        jobs.append((x, data_format, kernels.channel_pool(x, data_format), kernels.spatial_pool(x, data_format)))

    def work(job):
        x, data_format, (mean, max_), spatial = job
        for _ in range(20):
            got_mean, got_max = kernels.channel_pool(x, data_format)
            np.testing.assert_array_equal(got_mean, mean)
            np.testing.assert_array_equal(got_max, max_)
            np.testing.assert_array_equal(kernels.spatial_pool(x, data_format), spatial)
        return True

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert all(pool.map(work, jobs))


GOOD = np.ones((1, 2, 3, 4), np.float32)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: kernels.channel_pool(np.ones((2, 3, 4), np.float32)), ValueError, r"`x` must be a 4-D .* got shape \(2, 3, 4\)"),
        (lambda: kernels.channel_pool(np.ones((1, 0, 3, 4), np.float32)), ValueError, r"no zero-size dimension; got shape \(1, 0, 3, 4\)"),
        (lambda: kernels.channel_pool(np.ones((1, 2, 3, 4), np.int32)), TypeError, r"`x` must be a floating-point array .* got dtype int32"),
        (lambda: kernels.spatial_pool(np.ones((1, 2, 3, 4), np.complex64)), TypeError, r"floating-point .* got dtype complex64"),
        (lambda: kernels.spatial_pool(np.ones((1, 2, 3, 4), bool)), TypeError, r"floating-point .* got dtype bool"),
        (lambda: kernels.channel_pool(GOOD, "NHWC"), ValueError, r"`data_format` must be one of .* got 'NHWC'"),
        (lambda: kernels.channel_pool(GOOD, threads=0), ValueError, r"`threads` must be a positive int or None .* got 0"),
        (lambda: kernels.channel_pool(GOOD, threads=2.0), TypeError, r"`threads` must be a positive int or None; got 2.0"),
        (lambda: kernels.apply_channel_gate(GOOD, np.ones((1, 3), np.float32)), ValueError, r"`gate` must have shape \(1, 4\) or \(1, 1, 1, 4\) to match `x`; got \(1, 3\)"),
        (lambda: kernels.apply_spatial_gate(GOOD, np.ones((1, 2, 3), np.int64)), TypeError, r"`gate` must be a floating-point array; got dtype int64"),
        (lambda: kernels.apply_bam(GOOD, np.ones((1, 4)), np.ones((1, 2, 3)), "mean"), ValueError, r"`fusion` must be 'sum' or 'product'; got 'mean'"),
        (lambda: kernels.channel_pool(GOOD, _simd="sse9"), ValueError, r"unknown SIMD level \"sse9\""),
    ],
)
def test_input_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()
