"""Objects shared by threads, as a server shares them: `LiteRTModel`, `edge.Runtime` and
`cpu.compile`'s `CompiledBlock` give each caller its own, correct result."""

import concurrent.futures

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import keras_attn  # noqa: E402
from keras_attn import cpu  # noqa: E402


def _hammer(call, inputs, threads=8, rounds=6):
    """Calls `call` on every input from `threads` threads, `rounds` times each; returns the
    results of each input's calls."""
    jobs = [i for _ in range(rounds) for i in range(len(inputs))]
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(lambda i: (i, call(inputs[i])), jobs))
    by_input = {i: [] for i in range(len(inputs))}
    for i, y in results:
        by_input[i].append(y)
    return by_input


def _distinct_inputs(shape, count=8):
    rng = np.random.default_rng(0)
    return [rng.normal(size=shape).astype(np.float32) for _ in range(count)]


def test_compiled_block_is_thread_safe():
    layer = keras_attn.CBAM(reduction_ratio=2)
    inputs = _distinct_inputs((2, 9, 7, 8))
    layer(inputs[0])
    block = cpu.compile(layer, threads=1)
    want = [block(x) for x in inputs]
    for i, results in _hammer(block, inputs).items():
        for y in results:
            np.testing.assert_array_equal(y, want[i])


@pytest.fixture(scope="module")
def cbam_models(tmp_path_factory):
    pytest.importorskip("ai_edge_litert", reason="runs models in ai-edge-litert")
    from keras_attn.export import to_tflite

    folder = tmp_path_factory.mktemp("threads")
    inputs = keras.Input((6, 6, 4), batch_size=1)
    model = keras.Model(inputs, keras_attn.CBAM(reduction_ratio=2, kernel_size=3)(inputs))
    builtin, fused = str(folder / "cbam.tflite"), str(folder / "cbam_fused.tflite")
    to_tflite(model, builtin, batch_size=1)
    to_tflite(model, fused, batch_size=1, fused_attention=True)
    return model, builtin, fused


def test_litert_model_is_thread_safe(cbam_models):
    from keras_attn.export import LiteRTModel

    model, builtin, _ = cbam_models
    run = LiteRTModel(builtin, num_threads=1)
    inputs = _distinct_inputs((3, 6, 6, 4))
    want = [run(x) for x in inputs]
    for i, results in _hammer(run, inputs).items():
        np.testing.assert_allclose(want[i], np.asarray(model(inputs[i])), atol=1e-5)
        for y in results:
            np.testing.assert_array_equal(y, want[i])


def test_litert_model_empty_batch(cbam_models):
    from keras_attn.export import LiteRTModel

    y = LiteRTModel(cbam_models[1])(np.zeros((0, 6, 6, 4), np.float32))
    assert isinstance(y, np.ndarray) and y.shape == (0, 6, 6, 4)


def test_edge_runtime_is_thread_safe_and_takes_any_batch(cbam_models):
    from keras_attn import edge

    model, _, fused = cbam_models
    run = edge.Runtime(fused, threads=1)
    inputs = _distinct_inputs((1, 6, 6, 4))
    want = [run(x) for x in inputs]
    for i, results in _hammer(run, inputs).items():
        for y in results:
            np.testing.assert_array_equal(y, want[i])
    # A batch-1 model on 3 images, and on none.
    x = np.concatenate(inputs[:3])
    np.testing.assert_allclose(run(x), np.asarray(model(x)), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(run(x), np.concatenate(want[:3]))
    empty = run(np.zeros((0, 6, 6, 4), np.float32))
    assert empty.shape == (0, 6, 6, 4) and empty.dtype == np.float32
    with pytest.raises(ValueError, match=r"must have shape \('any batch', 6, 6, 4\)"):
        run(np.zeros((1, 6, 6, 3), np.float32))
