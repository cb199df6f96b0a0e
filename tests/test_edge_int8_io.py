"""int8 inputs and outputs in `keras_attn.edge.Runtime`: a builtin-only int8 model with int8 I/O
runs exactly as in LiteRT's own interpreter, and wrong dtypes are rejected by name."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("ai_edge_litert", reason="keras_attn.edge runs models in ai-edge-litert")

import keras_attn  # noqa: E402
from keras_attn import _rust, edge  # noqa: E402
from keras_attn.export import to_tflite  # noqa: E402

SHAPE, BATCH = (7, 9, 5), 2


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory):
    """(path, int8 input) of a Conv2D + CBAM model quantized to int8 with int8 I/O."""
    inputs = keras.Input(SHAPE, batch_size=BATCH)
    h = keras.layers.Conv2D(SHAPE[-1], 3, padding="same")(inputs)
    model = keras.Model(inputs, keras_attn.CBAM(reduction_ratio=2, kernel_size=3)(h))
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(16,) + SHAPE).astype("float32")
    path = tmp_path_factory.mktemp("edge_int8") / "cbam_int8_io.tflite"
    to_tflite(model, path, "int8", representative_data=samples, io_dtype="int8", batch_size=BATCH)
    x = rng.integers(-128, 128, size=(BATCH,) + SHAPE, dtype=np.int8)
    return str(path), x


def _interpreter(path, x):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def test_int8_io_matches_litert_interpreter_exactly(int8_model):
    path, x = int8_model
    runtime = edge.Runtime(path, threads=1)
    assert runtime.input_dtypes == [np.dtype("int8")]
    assert runtime.output_dtypes == [np.dtype("int8")]
    want = _interpreter(path, x)
    assert want.dtype == np.int8
    got = runtime(x)
    assert got.dtype == np.int8 and got.shape == (BATCH,) + SHAPE
    np.testing.assert_array_equal(got, want)
    # Integer arrays within int8's range are taken as int8 values.
    np.testing.assert_array_equal(runtime(x.astype(np.int32)), want)
    # The raw extension takes int8 arrays as they are.
    np.testing.assert_array_equal(runtime._runtime.run([x])[0], want)


def test_wrong_dtypes_are_rejected_by_name(int8_model):
    path, x = int8_model
    runtime = edge.Runtime(path)
    with pytest.raises(TypeError, match=r"`inputs\[0\]` must be an int8 array of quantized values .* got dtype float32"):
        runtime(x.astype(np.float32))
    too_big = np.zeros((BATCH,) + SHAPE, np.int16)
    too_big.flat[0] = 300
    with pytest.raises(ValueError, match=r"`inputs\[0\]` must hold int8 values in -128..127; got values in 0..300"):
        runtime(too_big)
    with pytest.raises(TypeError, match=r"`inputs\[0\]` must be an array of dtype int8 \(the model input's type\); got dtype float32"):
        runtime._runtime.run([x.astype(np.float32)])
    with pytest.raises(ValueError, match=r"`inputs` must hold 1 arrays, one per model input; got 2"):
        runtime._runtime.run([x, x])


def test_float_model_reports_float32_dtypes(tmp_path):
    inputs = keras.Input((4, 4, 3), batch_size=1)
    model = keras.Model(inputs, keras_attn.SqueezeExcite(reduction_ratio=1)(inputs))
    path = tmp_path / "se.tflite"
    to_tflite(model, path)
    runtime = edge.Runtime(path)
    assert runtime.input_dtypes == [np.dtype("float32")] == runtime.output_dtypes
    with pytest.raises(TypeError, match=r"`inputs\[0\]` must be an array of dtype float32 \(the model input's type\); got dtype int8"):
        runtime._runtime.run([np.zeros((1, 4, 4, 3), np.int8)])
    with pytest.raises(TypeError, match=r"`inputs\[0\]` must be an array of dtype float32 .* got a list"):
        runtime._runtime.run([[0.0]])
    assert isinstance(runtime._runtime, _rust.LiteRtRuntime)
