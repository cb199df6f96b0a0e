"""Fused attention custom ops in LiteRT (`to_tflite(..., fused_attention=True)` and
`keras_attn.edge.Runtime`): fused vs builtin vs Keras, alignment, and rejected models."""

import warnings

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("ai_edge_litert", reason="keras_attn.edge runs models in ai-edge-litert")

import keras_attn  # noqa: E402
from keras_attn import edge  # noqa: E402
from keras_attn._keras_internals import nested_layers  # noqa: E402
from keras_attn.export import LiteRTModel, read_tflite, to_tflite  # noqa: E402
from keras_attn.export.flatbuffer import _schema, flatbuffer_utils  # noqa: E402
from keras_attn.export.fused import align_buffers  # noqa: E402


def _model(block, shape, batch):
    inputs = keras.Input(shape, batch_size=batch)
    h = keras.layers.Conv2D(shape[-1], 3, padding="same")(inputs)
    model = keras.Model(inputs, block(h))
    # Non-trivial BatchNormalization statistics, so that folding is exercised.
    for layer in nested_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            rng = np.random.default_rng(len(layer.name))
            layer.moving_mean.assign(rng.normal(size=layer.moving_mean.shape) * 0.1)
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, size=layer.moving_variance.shape))
    return model


CASES = {
    "cbam_odd_batch2": (lambda: keras_attn.CBAM(reduction_ratio=2), (9, 11, 6), 2, "KerasAttnCBAM"),
    "cbam_c1": (lambda: keras_attn.CBAM(reduction_ratio=1, kernel_size=3), (5, 7, 1), 1, "KerasAttnCBAM"),
    "channel_max_only": (
        lambda: keras_attn.ChannelAttention(reduction_ratio=4, pool_types=("max",)), (6, 5, 8), 1,
        "KerasAttnCBAM",
    ),
    "spatial": (lambda: keras_attn.SpatialAttention(kernel_size=5), (7, 6, 3), 3, "KerasAttnCBAM"),
    "se": (lambda: keras_attn.SqueezeExcite(reduction_ratio=4), (5, 9, 12), 2, "KerasAttnSE"),
    "bam_product": (
        lambda: keras_attn.BAM(reduction_ratio=4, fusion="product"), (10, 9, 16), 2, "KerasAttnBAM",
    ),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (keras model, input, fused path, builtin path), converted once."""
    folder = tmp_path_factory.mktemp("edge")
    cache = {}

    def get(name):
        if name not in cache:
            make, shape, batch, _ = CASES[name]
            model = _model(make(), shape, batch)
            x = np.random.default_rng(1).normal(size=(batch,) + shape).astype("float32")
            fused, builtin = folder / f"{name}_fused.tflite", folder / f"{name}.tflite"
            to_tflite(model, fused, fused_attention=True, batch_size=batch)
            to_tflite(model, builtin, batch_size=batch)
            cache[name] = (model, x, str(fused), str(builtin))
        return cache[name]

    return get


@pytest.mark.parametrize("name", list(CASES))
def test_fused_matches_builtin_and_keras(exported, name):
    model, x, fused, builtin = exported(name)
    graph = read_tflite(fused)
    assert graph.custom_ops() == [CASES[name][3]]
    want = np.asarray(model(x, training=False))
    got = edge.Runtime(fused, threads=1)(x)
    builtin_out = LiteRTModel(builtin)(x)
    np.testing.assert_allclose(got, builtin_out, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(edge.Runtime(fused, threads=2)(x), got, atol=1e-6, rtol=0)


def _with_int8_gate_kernels(model):
    """A copy of `model` whose gate MLP kernels hold the values `gate_weights="int8"` computes
    with: each output column quantized symmetrically to -127..127 steps of max |column| / 127,
    in float32, rounding half away from zero."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for layer in nested_layers(copy):
        if isinstance(layer, keras_attn.ChannelAttention):
            dense_layers = [layer.mlp_hidden, layer.mlp_output]
        elif isinstance(layer, keras_attn.SqueezeExcite):
            dense_layers = [layer.reduce, layer.expand]
        else:
            continue
        for dense in dense_layers:
            kernel = np.asarray(dense.kernel, np.float32)
            step = np.abs(kernel).max(axis=0) / np.float32(127)
            ratio = kernel / np.where(step > 0, step, np.float32(1))
            steps = np.clip(np.sign(ratio) * np.floor(np.abs(ratio) + 0.5), -127, 127)
            dense.kernel.assign((steps * step).astype(np.float32))
    return copy


@pytest.mark.parametrize("name", ["cbam_odd_batch2", "channel_max_only", "se"])
def test_int8_gate_weights_compute_with_per_channel_int8_kernels(exported, name):
    """`gate_weights="int8"`: the float32 model's fused ops compute as the Keras model whose gate
    MLP kernels are quantized per output channel, and differ from the float32 weights' result."""
    model, x, fused, _ = exported(name)
    want = np.asarray(_with_int8_gate_kernels(model)(x, training=False))
    runtime = edge.Runtime(fused, threads=1, gate_weights="int8")
    got = runtime(x)
    assert runtime.gate_weights == "int8" and "gate_weights='int8'" in repr(runtime)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert not np.array_equal(got, edge.Runtime(fused, threads=1)(x))
    np.testing.assert_allclose(edge.Runtime(fused, threads=2, gate_weights="int8")(x), got,
                               atol=1e-6, rtol=0)


def test_buffers_are_64_byte_aligned(exported):
    with open(exported("bam_product")[2], "rb") as f:
        data = f.read()
    root = _schema.Model.GetRootAs(data, 0)
    offsets = [root.Buffers(i).Offset() for i in range(root.BuffersLength())]
    stored = [o for o in offsets if o > 1]
    assert stored and all(o % 64 == 0 for o in stored)
    assert all(root.Buffers(i).DataLength() == 0 for i in range(root.BuffersLength()))


def _rewrite(path, out, change):
    """Applies `change(model, custom_op)` to the fused op of a model and writes it aligned."""
    fbu = flatbuffer_utils()
    with open(path, "rb") as f:
        model = fbu.read_model_from_bytearray(bytearray(f.read()))
    custom = [i for i, c in enumerate(model.operatorCodes) if c.customCode]
    op = next(o for o in model.subgraphs[0].operators if o.opcodeIndex in custom)
    change(model, op)
    with open(out, "wb") as f:
        f.write(align_buffers(bytes(fbu.convert_object_to_bytearray(model))))
    return str(out)


def test_timings_count_every_fused_call_and_start_again(exported):
    _, x, fused, builtin = exported("se")
    runtime = edge.Runtime(fused, threads=1)
    runtime.take_timings()
    for _ in range(3):
        runtime(x)
    timings = runtime.take_timings()
    op = timings["ops"]["KerasAttnSE"]
    assert list(timings["ops"]) == ["KerasAttnSE"]
    assert op["calls"] == 3
    assert 0 < op["compute_seconds"] and 0 < op["buffer_seconds"]
    # The fused op runs inside the model's runs.
    assert op["compute_seconds"] + op["buffer_seconds"] < timings["model_seconds"]
    # Per map shape: the one shape of this model's fused op, the same figures.
    assert timings["by_shape"] == {("KerasAttnSE", tuple(x.shape)): op}
    assert runtime.take_timings() == {"model_seconds": 0.0, "ops": {}, "by_shape": {}}
    # A model without fused ops has none.
    plain = edge.Runtime(builtin, threads=1)
    plain(x)
    timings = plain.take_timings()
    assert timings["ops"] == {} and timings["model_seconds"] > 0


def test_malformed_attributes_are_rejected_at_compile(exported, tmp_path):
    from flatbuffers import flexbuffers

    fused = exported("se")[2]

    def future_version(model, op):
        op.customOptions = list(flexbuffers.Dumps({"version": 3, "residual": 0, "relu": 0}))

    bad = _rewrite(fused, tmp_path / "v2.tflite", future_version)
    with pytest.raises(ValueError, match="KerasAttnSE: attribute version 3 is not supported"):
        edge.Runtime(bad)

    def garbage(model, op):
        op.customOptions = [1, 2, 3]

    bad = _rewrite(fused, tmp_path / "garbage.tflite", garbage)
    with pytest.raises(ValueError, match="KerasAttnSE: malformed attributes"):
        edge.Runtime(bad)


def test_wrong_input_count_is_rejected_at_compile(exported, tmp_path):
    def two_more_weights(model, op):
        inputs = np.asarray(op.inputs)
        op.inputs = np.insert(inputs, 1, [inputs[1], inputs[1]])

    bad = _rewrite(exported("cbam_odd_batch2")[2], tmp_path / "long.tflite", two_more_weights)
    with pytest.raises(ValueError, match=r"KerasAttnCBAM: expected \[4, 5, 6, 7, 8, 9\] inputs, got 10"):
        edge.Runtime(bad)


def test_unknown_custom_op_and_bad_arguments(exported, tmp_path):
    def rename(model, op):
        model.operatorCodes[op.opcodeIndex].customCode = b"SomeoneElsesOp"

    bad = _rewrite(exported("se")[2], tmp_path / "other.tflite", rename)
    with pytest.raises(ValueError, match=r"custom ops \['SomeoneElsesOp'\] that keras-attn has no"):
        edge.Runtime(bad)
    with pytest.raises(ValueError, match="`path`: no .tflite file"):
        edge.Runtime(tmp_path / "missing.tflite")
    runtime = edge.Runtime(exported("se")[2])
    any_batch = r"`inputs\[0\]` must have shape \('any batch', 5, 9, 12\)"
    with pytest.raises(ValueError, match=any_batch):
        runtime(np.zeros((2, 5, 9, 11), np.float32))
    with pytest.raises(ValueError, match="`threads` must be a positive int or None"):
        edge.Runtime(exported("se")[2], threads=0)
    with pytest.raises(ValueError, match=r"`gate_weights` must be one of \['float32', 'int8'\]; got 'float16'"):
        edge.Runtime(exported("se")[2], gate_weights="float16")


def test_fused_attention_is_float32_or_int8_only(exported, tmp_path):
    model = exported("se")[0]
    with pytest.raises(ValueError, match="`fused_attention=True` supports quantization=None"):
        to_tflite(model, tmp_path / "m.tflite", "float16", fused_attention=True)


def test_each_node_keeps_its_own_block(tmp_path):
    """Three CBAMs of the same shapes with different weights in one model (two reading the same
    map): each node's block is built once, and every run matches the builtin path and Keras."""
    inputs = keras.Input((6, 7, 8), batch_size=1)
    h = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    a = keras_attn.CBAM(reduction_ratio=2)(h)
    b = keras_attn.CBAM(reduction_ratio=2)(h)
    out = keras_attn.CBAM(reduction_ratio=2)(keras.layers.Add()([a, b]))
    model = keras.Model(inputs, out)
    fused, builtin = tmp_path / "three_fused.tflite", tmp_path / "three.tflite"
    to_tflite(model, fused, fused_attention=True)
    to_tflite(model, builtin)
    assert read_tflite(fused).op_counts()["KerasAttnCBAM"] == 3
    runtime, reference = edge.Runtime(fused, threads=1), LiteRTModel(builtin)
    for seed in range(3):
        x = np.random.default_rng(seed).normal(size=(1, 6, 7, 8)).astype("float32")
        got = runtime(x)
        np.testing.assert_allclose(got, reference(x), atol=1e-5, rtol=0)
        np.testing.assert_allclose(got, np.asarray(model(x, training=False)), atol=1e-5, rtol=0)
    assert runtime.cached_blocks == 3


def test_weights_that_are_not_constants_are_read_every_run(exported, tmp_path):
    """A fused op whose weight is a model input (not a constant) gets no cached block: a new
    weight in the same input buffer changes the result."""
    _, x, fused, _ = exported("se")
    with open(fused, "rb") as f:
        model = flatbuffer_utils().read_model_from_bytearray(bytearray(f.read()))
    graph = model.subgraphs[0]
    se = next(o for o in graph.operators if model.operatorCodes[o.opcodeIndex].customCode)
    tensor = graph.tensors[int(se.inputs[1])]
    kernel = np.frombuffer(bytes(model.buffers[tensor.buffer].data), "float32").reshape(tensor.shape)

    def weight_as_input(model, op):
        graph = model.subgraphs[0]
        graph.inputs = [*graph.inputs, int(op.inputs[1])]
        graph.tensors[int(op.inputs[1])].buffer = 0
        entry = _schema.TensorMapT()
        entry.name, entry.tensorIndex = b"se_kernel", int(op.inputs[1])
        model.signatureDefs[0].inputs.append(entry)

    runtime = edge.Runtime(_rewrite(fused, tmp_path / "input_weight.tflite", weight_as_input))
    want = edge.Runtime(fused)(x)
    np.testing.assert_allclose(runtime([x, kernel]), want, atol=1e-6, rtol=0)
    assert runtime.cached_blocks == 0
    assert np.abs(runtime([x, 2 * kernel]) - want).max() > 1e-3
    np.testing.assert_allclose(runtime([x, kernel]), want, atol=1e-6, rtol=0)


def test_fused_attention_can_name_the_block_families_to_fuse(tmp_path):
    inputs = keras.Input((6, 5, 8), batch_size=1)
    h = keras_attn.CBAM(reduction_ratio=2)(keras.layers.Conv2D(8, 3, padding="same")(inputs))
    model = keras.Model(inputs, keras_attn.SqueezeExcite(reduction_ratio=2)(h))
    path = tmp_path / "cbam_only.tflite"
    report = to_tflite(model, path, fused_attention=["cbam"])
    assert read_tflite(path).custom_ops() == ["KerasAttnCBAM"]
    assert report.op_counts["LOGISTIC"] == 1  # SE's gate stayed builtin
    x = np.random.default_rng(0).normal(size=(1, 6, 5, 8)).astype("float32")
    np.testing.assert_allclose(edge.Runtime(path)(x), np.asarray(model(x, training=False)),
                               atol=1e-5, rtol=0)
    # A predicate on the layer and its input shape: here, the block on the model's output only.
    path = tmp_path / "se_only.tflite"
    seen = []
    to_tflite(model, path,
              fused_attention=lambda layer, shape: seen.append(shape) or layer is model.layers[-1])
    assert set(seen) == {(1, 6, 5, 8)}  # the export traces the model several times
    assert read_tflite(path).custom_ops() == ["KerasAttnSE"]
    np.testing.assert_allclose(edge.Runtime(path)(x), np.asarray(model(x, training=False)),
                               atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r'`fused_attention` must be True, False, "auto", a non-e'):
        to_tflite(model, tmp_path / "bad.tflite", fused_attention=["eca"])


def test_fused_attention_with_nothing_to_fuse_warns(tmp_path):
    inputs = keras.Input((6, 5, 8), batch_size=1)
    model = keras.Model(inputs, keras_attn.ECA()(keras.layers.Conv2D(8, 3)(inputs)))
    with pytest.warns(UserWarning, match=r"fused_attention=True\): no layer of `model` was fused"):
        report = to_tflite(model, tmp_path / "plain.tflite", fused_attention=True)
    assert read_tflite(report.path).custom_ops() == []


def test_fused_attention_auto_fuses_the_blocks_that_pay(tmp_path):
    """"auto": CBAM (and its gates) on maps of 7x7 and more; CBAM on smaller maps, SE and BAM
    stay builtin (keras_attn.export.fused.AUTO_MIN_PIXELS)."""
    from keras_attn.export.fused import auto_fuses

    inputs = keras.Input((14, 15, 8), batch_size=1)
    h = keras_attn.CBAM(reduction_ratio=2)(keras.layers.Conv2D(8, 3, padding="same")(inputs))
    h = keras_attn.SpatialAttention()(keras_attn.SqueezeExcite(reduction_ratio=2)(h))
    h = keras.layers.MaxPooling2D()(keras_attn.BAM(reduction_ratio=2)(h))
    h = keras_attn.CBAM(reduction_ratio=2)(h)  # on 7x7
    model = keras.Model(inputs, keras_attn.CBAM(reduction_ratio=2)(keras.layers.MaxPooling2D()(h)))
    path = tmp_path / "auto.tflite"
    report = to_tflite(model, path, fused_attention="auto")
    assert report.op_counts["KerasAttnCBAM"] == 3 and read_tflite(path).custom_ops() == [
        "KerasAttnCBAM"]
    x = np.random.default_rng(0).normal(size=(1, 14, 15, 8)).astype("float32")
    np.testing.assert_allclose(edge.Runtime(path)(x), np.asarray(model(x, training=False)),
                               atol=1e-5, rtol=0)
    # Nothing worth fusing: builtin ops, and no warning (that is the choice, not a miss).
    small = keras.Input((6, 7, 8), batch_size=1)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=r"to_tflite\(fused_attention")
        report = to_tflite(keras.Model(small, keras_attn.CBAM(reduction_ratio=2)(small)),
                           tmp_path / "auto_small.tflite", fused_attention="auto")
    assert "KerasAttnCBAM" not in report.op_counts and report.op_counts["LOGISTIC"] == 2
    for precision in ("float32", "int8"):
        assert auto_fuses("KerasAttnCBAM", (1, 14, 14, 64), precision)
        assert auto_fuses("KerasAttnCBAM", (1, 7, 7, 2048), precision)
        assert not auto_fuses("KerasAttnCBAM", (1, 6, 7, 2048), precision)
        assert not auto_fuses("KerasAttnCBAM", (1, None, None, 64), precision)
        assert not auto_fuses("KerasAttnBAM", (1, 56, 56, 256), precision)


def test_any_batch_size_runs_in_chunks_of_the_models(exported):
    model, x, fused, _ = exported("se")  # batch 2
    runtime = edge.Runtime(fused, threads=1)
    batch = np.concatenate([x, x[:1] * 2.0])  # 3 images: one chunk and a padded one
    want = np.asarray(model(batch, training=False))
    np.testing.assert_allclose(runtime(batch), want, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(runtime(x[:1]), runtime(x)[:1])
    assert runtime(x[:0]).shape == (0,) + x.shape[1:]
