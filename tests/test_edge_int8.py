"""int8 models with fused attention ops (`to_tflite(..., "int8", fused_attention=True)`):
calibration through keras-attn's kernels, the folded int8 ops against the float op between a
DEQUANTIZE and a QUANTIZE, and whole models against Keras and the builtin int8 path."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("ai_edge_litert", reason="keras_attn.edge runs models in ai-edge-litert")

import keras_attn  # noqa: E402
from keras_attn import edge  # noqa: E402
from keras_attn.export import LiteRTModel, read_tflite, to_tflite  # noqa: E402
from keras_attn.export import fused_int8  # noqa: E402
from keras_attn.export.flatbuffer import flatbuffer_utils  # noqa: E402
from keras_attn.export.fused import align_buffers  # noqa: E402

BLOCKS = {
    "cbam_batch2": (lambda: keras_attn.CBAM(reduction_ratio=2), (9, 11, 6), 2),
    "cbam_c1": (lambda: keras_attn.CBAM(reduction_ratio=1, kernel_size=3), (5, 7, 1), 1),
    "channel_max_only": (
        lambda: keras_attn.ChannelAttention(reduction_ratio=4, pool_types=("max",)), (6, 5, 8), 1,
    ),
    "spatial": (lambda: keras_attn.SpatialAttention(kernel_size=5), (7, 6, 3), 1),
    "se": (lambda: keras_attn.SqueezeExcite(reduction_ratio=4), (5, 9, 12), 2),
    "bam": (lambda: keras_attn.BAM(reduction_ratio=4), (10, 9, 16), 1),
}


def _block_model(make, shape, batch):
    """A ReLU conv, then the block: the block's int8 output is the model's output."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input(shape, batch_size=batch)
    h = keras.layers.Conv2D(shape[-1], 3, padding="same", activation="relu")(inputs)
    return keras.Model(inputs, make()(h))


def _calibration(shape, count=16):
    return np.random.default_rng(0).uniform(-1, 1, size=(count,) + shape).astype("float32")


def _quantized(x, path):
    """`x` quantized as the input of the int8 model at `path`."""
    with open(path, "rb") as f:
        graph = flatbuffer_utils().read_model_from_bytearray(bytearray(f.read())).subgraphs[0]
    quantization = graph.tensors[int(graph.inputs[0])].quantization
    scale, zero_point = float(quantization.scale[0]), int(quantization.zeroPoint[0])
    return np.clip(np.round(x / scale) + zero_point, -128, 127).astype(np.int8)


@pytest.mark.parametrize("name", list(BLOCKS))
def test_int8_op_matches_the_float_op_between_dequantize_and_quantize(name, tmp_path, monkeypatch):
    """The folded int8 op computes what the unfolded model does (DEQUANTIZE, float op,
    QUANTIZE) up to the rounding of its output: at most 1 LSB apart."""
    make, shape, batch = BLOCKS[name]
    model = _block_model(make, shape, batch)
    data = _calibration(shape)
    folded = tmp_path / "folded.tflite"
    to_tflite(model, folded, "int8", representative_data=data, io_dtype="int8",
              fused_attention=True, batch_size=batch)
    graph = read_tflite(folded)
    custom = [op for op in graph.ops if op.is_custom]
    assert len(custom) == 1 and custom[0].input_types[0] == "INT8"
    assert custom[0].output_types == ("INT8",)
    assert "DEQUANTIZE" not in graph.op_counts() and "QUANTIZE" not in graph.op_counts()

    unfolded = tmp_path / "unfolded.tflite"
    monkeypatch.setattr(fused_int8, "fold_quantization", lambda data: (data, 0))
    to_tflite(model, unfolded, "int8", representative_data=data, io_dtype="int8",
              fused_attention=True, batch_size=batch)
    counts = read_tflite(unfolded).op_counts()
    assert counts["DEQUANTIZE"] == 1 and counts["QUANTIZE"] == 1

    x = _quantized(data[:batch], str(folded))
    got = edge.Runtime(folded, threads=1)(x)
    want = edge.Runtime(unfolded, threads=1)(x)
    assert got.dtype == np.int8 and got.shape == want.shape
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1
    assert (diff == 0).mean() > 0.9
    np.testing.assert_array_equal(edge.Runtime(folded, threads=2)(x), got)


def _cnn():
    keras.utils.set_random_seed(5)
    inputs = keras.Input((15, 13, 3), batch_size=1)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    h = keras_attn.CBAM(reduction_ratio=4)(h)
    h = keras.layers.Conv2D(24, 3, padding="same", activation="relu")(h)
    h = keras_attn.BAM(reduction_ratio=4)(h)
    h = keras.layers.Conv2D(8, 3, padding="same")(h)
    h = keras_attn.SqueezeExcite(reduction_ratio=2)(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(4)(h))


def test_int8_cnn_matches_keras_as_closely_as_the_builtin_int8_model(tmp_path):
    model = _cnn()
    data = _calibration((15, 13, 3), 32)
    fused, builtin = tmp_path / "fused.tflite", tmp_path / "builtin.tflite"
    report = to_tflite(model, fused, "int8", representative_data=data, fused_attention=True)
    to_tflite(model, builtin, "int8", representative_data=data)
    counts = report.op_counts
    assert {counts[k] for k in ("KerasAttnCBAM", "KerasAttnBAM", "KerasAttnSE")} == {1}
    # Only the model's float input is quantized and its float output dequantized.
    assert counts["QUANTIZE"] == 1 and counts["DEQUANTIZE"] == 1
    for op in read_tflite(fused).ops:
        if op.is_custom:
            assert op.input_types[0] == "INT8" and op.output_types == ("INT8",)

    x = data[:8]
    want = np.asarray(model(x, training=False))
    runtime, reference = edge.Runtime(fused, threads=1), LiteRTModel(builtin)
    got = np.concatenate([runtime(x[i : i + 1]) for i in range(len(x))])
    builtin_out = np.concatenate([reference(x[i : i + 1]) for i in range(len(x))])
    fused_error = np.abs(got - want).max()
    builtin_error = np.abs(builtin_out - want).max()
    scale = np.abs(want).max()
    assert fused_error < 0.05 * scale
    # The fused blocks compute in float inside, the builtin gates in int8 (each pooled map of a
    # spatial gate on its own scale): about as close to Keras as each other.
    assert fused_error <= 1.5 * builtin_error
    cosine = np.sum(got * want) / np.linalg.norm(got) / np.linalg.norm(want)
    assert cosine > 0.99


def test_calibration_records_the_keras_ranges(tmp_path):
    """`calibrate` runs the fused model in LiteRT: the range it records for the fused op's
    output is the range of the Keras block's output over the same data."""
    make, shape, batch = BLOCKS["cbam_batch2"]
    model = _block_model(make, shape, batch)
    path = tmp_path / "float.tflite"
    to_tflite(model, path, fused_attention=True, batch_size=batch)
    data = _calibration(shape, 8)
    batches = [[data[i : i + batch]] for i in range(0, len(data), batch)]
    calibrated = fused_int8.calibrate(path.read_bytes(), batches)
    graph = flatbuffer_utils().read_model_from_bytearray(bytearray(calibrated)).subgraphs[0]
    output = graph.tensors[int(graph.outputs[0])].quantization
    inputs = graph.tensors[int(graph.inputs[0])].quantization
    want = np.asarray(model(data, training=False))
    np.testing.assert_allclose([output.min[0], output.max[0]], [want.min(), want.max()],
                               rtol=0, atol=1e-5)
    np.testing.assert_array_equal([inputs.min[0], inputs.max[0]], [data.min(), data.max()])


def test_malformed_int8_attributes_are_rejected_at_compile(tmp_path):
    from flatbuffers import flexbuffers

    make, shape, batch = BLOCKS["se"]
    path = tmp_path / "se.tflite"
    to_tflite(_block_model(make, shape, batch), path, "int8", representative_data=_calibration(shape),
              io_dtype="int8", fused_attention=True, batch_size=batch)
    fbu = flatbuffer_utils()
    model = fbu.read_model_from_bytearray(bytearray(path.read_bytes()))
    op = next(o for o in model.subgraphs[0].operators
              if model.operatorCodes[o.opcodeIndex].customCode)
    options = flexbuffers.Loads(bytes(op.customOptions))
    options["output_scale"] = -1.0
    op.customOptions = list(flexbuffers.Dumps(options))
    bad = tmp_path / "negative_scale.tflite"
    bad.write_bytes(align_buffers(bytes(fbu.convert_object_to_bytearray(model))))
    with pytest.raises(ValueError, match="KerasAttnSE: .*output_scale"):
        edge.Runtime(bad)


def test_non_finite_calibration_data_is_refused_before_conversion(tmp_path, monkeypatch):
    make, shape, batch = BLOCKS["se"]
    data = _calibration(shape)
    data[7, 0, 0, 0] = np.inf
    model = _block_model(make, shape, batch)
    monkeypatch.setattr(model, "export", lambda *a, **k: pytest.fail("converted bad data"))
    with pytest.raises(ValueError, match=r"`representative_data`: sample 7 holds inf"):
        to_tflite(model, tmp_path / "m.tflite", "int8", representative_data=data,
                  fused_attention=True)
