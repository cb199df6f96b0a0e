"""The residual epilogue of the fused attention ops (`to_tflite(..., fused_attention=...)`): a
fused op followed by `Add([out, shortcut])` and a ReLU becomes one op that takes the shortcut,
in ResNet blocks (`keras_attn.models.resnet`) and in any functional model; float32 and int8
models run in `keras_attn.edge.Runtime` against Keras."""

import importlib

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("ai_edge_litert", reason="keras_attn.edge runs models in ai-edge-litert")

import keras_attn  # noqa: E402
from keras_attn import edge  # noqa: E402
from keras_attn.export import read_tflite, to_tflite  # noqa: E402
from keras_attn.export import fused_residual  # noqa: E402
from keras_attn._keras_internals import nested_layers  # noqa: E402
from keras_attn.export.flatbuffer import flatbuffer_utils  # noqa: E402

# The module (the package exports the `resnet` function under the same name).
resnet_module = importlib.import_module("keras_attn.models.resnet")


def _random_statistics(model, seed=0):
    """Non-trivial BatchNormalization statistics and scales (the authors' initialisation sets
    CBAM's spatial-gate scale to 0, which would make that gate a constant)."""
    rng = np.random.default_rng(seed)
    for layer in nested_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(size=layer.moving_mean.shape) * 0.1)
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, size=layer.moving_variance.shape))
            layer.gamma.assign(rng.uniform(0.5, 1.5, size=layer.gamma.shape))
            layer.beta.assign(rng.normal(size=layer.beta.shape) * 0.1)
    return model


def _resnet_stage(kind, attention, shape=(12, 10, 8), planes=4, batch=1):
    """Two blocks of `keras_attn.models.resnet` (`kind` "basic" or "bottleneck"), the first with
    a stride-2 projection shortcut (computed after the attention block in the graph), then the
    classifier: the ResNet blocks' own code on small maps."""
    keras.utils.set_random_seed(7)
    block = resnet_module._bottleneck_block if kind == "bottleneck" else resnet_module._basic_block
    spec = resnet_module._AttentionSpec.resolve(attention, {"reduction_ratio": 2},
                                                "channels_last")
    inputs = keras.Input(shape, batch_size=batch)
    h = block(inputs, planes, 2, "layer1.0", "channels_last", spec)
    h = block(h, planes, 1, "layer1.1", "channels_last", spec)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return _random_statistics(keras.Model(inputs, keras.layers.Dense(5)(h)))


def _functional(make_block, activation, shape=(9, 7, 6)):
    """conv, block, Add(conv output) and a ReLU if `activation` is "relu", twice."""
    keras.utils.set_random_seed(11)
    inputs = keras.Input(shape, batch_size=1)
    h = keras.layers.Conv2D(shape[-1], 3, padding="same")(inputs)
    for _ in range(2):
        out = make_block()(keras.layers.Conv2D(shape[-1], 3, padding="same")(h))
        h = keras.layers.Add()([h, out])  # the shortcut first: either operand order folds
        if activation == "relu":
            h = keras.layers.ReLU()(h)
    return _random_statistics(keras.Model(inputs, keras.layers.Conv2D(4, 1)(h)))


FLOAT_CASES = {
    "cbam_basic": (lambda: _resnet_stage("basic", "cbam"), (1, 1)),
    "se_bottleneck": (lambda: _resnet_stage("bottleneck", "se"), (1, 1)),
    "cbam_bottleneck_batch2": (lambda: _resnet_stage("bottleneck", "cbam", batch=2), (1, 1)),
    "channel_add_relu": (
        lambda: _functional(lambda: keras_attn.ChannelAttention(reduction_ratio=2), "relu"), (1, 1)),
    "spatial_add_only": (
        lambda: _functional(lambda: keras_attn.SpatialAttention(kernel_size=3), None), (1, 0)),
    "bam_add_relu": (
        lambda: _functional(lambda: keras_attn.BAM(reduction_ratio=2), "relu", (10, 9, 16)), (1, 1)),
}


def _epilogues(path):
    """`(residual, relu)` of every fused op, and the op counts."""
    from flatbuffers import flexbuffers

    fbu = flatbuffer_utils()
    with open(path, "rb") as f:
        model = fbu.read_model_from_bytearray(bytearray(f.read()))
    found = []
    for op in model.subgraphs[0].operators:
        if model.operatorCodes[op.opcodeIndex].customCode:
            attributes = flexbuffers.Loads(bytes(op.customOptions))
            assert attributes["version"] == 2
            found.append((attributes["residual"], attributes["relu"]))
    return found, read_tflite(path).op_counts()


def _input(model, seed=1):
    shape = (model.inputs[0].shape[0] or 1,) + tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.mark.parametrize("name", list(FLOAT_CASES))
def test_float32_residual_epilogue_matches_keras(name, tmp_path):
    make, epilogue = FLOAT_CASES[name]
    model = make()
    batch = model.inputs[0].shape[0]
    path = tmp_path / f"{name}.tflite"
    to_tflite(model, path, fused_attention=True, batch_size=batch)
    found, counts = _epilogues(path)
    assert found == [epilogue, epilogue]
    assert "ADD" not in counts and "RELU" not in counts
    x = _input(model)
    want = np.asarray(model(x, training=False))
    for threads in (1, 2):
        runtime = edge.Runtime(path, threads=threads)
        got = runtime(x)
        assert np.abs(got - want).max() <= 1e-3 * np.abs(want).max()
        # The shortcut is a map, not a weight: each block is still built once and kept.
        assert runtime.cached_blocks == 2


def test_only_foldable_adds_are_folded(tmp_path):
    """Two blocks meeting in one ADD: the first takes the other's output as its shortcut. No
    epilogue when the block output has a second reader, nor for an activation other than ReLU
    (a ReLU6, which the converter fuses into the ADD): those ADDs stay builtin."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((6, 5, 8), batch_size=1)
    h = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    meet = keras.layers.ReLU()(keras.layers.Add()([keras_attn.CBAM(reduction_ratio=2)(h),
                                                   keras_attn.CBAM(reduction_ratio=2)(h)]))
    a = keras_attn.CBAM(reduction_ratio=2)(meet)
    read_twice = keras.layers.Add()([keras.layers.ReLU()(keras.layers.Add()([a, meet])), a])
    b = keras_attn.SqueezeExcite(reduction_ratio=2)(read_twice)
    out = keras.layers.ReLU(max_value=6.0)(keras.layers.Add()([b, read_twice]))
    model = _random_statistics(keras.Model(inputs, out))
    path = tmp_path / "unfoldable.tflite"
    to_tflite(model, path, fused_attention=True)
    found, counts = _epilogues(path)
    assert sorted(found) == [(0, 0), (0, 0), (0, 0), (1, 1)]
    assert counts["ADD"] == 3
    x = _input(model)
    want = np.asarray(model(x, training=False))
    assert np.abs(edge.Runtime(path)(x) - want).max() <= 1e-3 * np.abs(want).max()


@pytest.mark.slow
def test_cbam_resnet18_on_a_small_input(tmp_path):
    """The whole `resnet(18, attention="cbam")` at 32x32 (its last stage on 1x1 maps, where the
    converter adds the shortcut as a reshaped bias): every block's ADD and ReLU folded."""
    keras.utils.set_random_seed(0)
    model = _random_statistics(keras_attn.models.resnet(
        18, attention="cbam", input_shape=(32, 32, 3), num_classes=10,
        classifier_activation=None))
    path = tmp_path / "cbam_resnet18.tflite"
    to_tflite(model, path, fused_attention=True)
    found, counts = _epilogues(path)
    assert found == [(1, 1)] * 8
    assert "ADD" not in counts and "RESHAPE" not in counts
    x = _input(model)
    want = np.asarray(model(x, training=False))
    assert np.abs(edge.Runtime(path, threads=2)(x) - want).max() <= 1e-3 * np.abs(want).max()


def _calibration(model, count=16):
    shape = tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(0).normal(size=(count,) + shape).astype("float32")


def _check_quantization_vectors(path):
    """Each folded int8 op's quantization input holds the map's, the ReLU output's and the
    shortcut's scale and zero point, and so do its attributes."""
    from flatbuffers import flexbuffers

    fbu = flatbuffer_utils()
    with open(path, "rb") as f:
        model = fbu.read_model_from_bytearray(bytearray(f.read()))
    graph = model.subgraphs[0]
    keys = ("input_scale", "input_zero_point", "output_scale", "output_zero_point",
            "residual_scale", "residual_zero_point")
    for op in graph.operators:
        if not model.operatorCodes[op.opcodeIndex].customCode:
            continue
        x, shortcut, y = (graph.tensors[int(t)] for t in (*op.inputs[:2], op.outputs[0]))
        vector = graph.tensors[int(op.inputs[-2])]
        values = np.frombuffer(bytes(model.buffers[vector.buffer].data), np.float32)
        want = [x.quantization.scale[0], x.quantization.zeroPoint[0],
                y.quantization.scale[0], y.quantization.zeroPoint[0],
                shortcut.quantization.scale[0], shortcut.quantization.zeroPoint[0]]
        np.testing.assert_array_equal(values, np.array(want, np.float32))
        attributes = flexbuffers.Loads(bytes(op.customOptions))
        np.testing.assert_array_equal(np.array([attributes[k] for k in keys], np.float32), values)


def _cosine(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


INT8_CASES = {
    "cbam_basic": (lambda: _resnet_stage("basic", "cbam"), (1, 1)),
    "se_bottleneck": (lambda: _resnet_stage("bottleneck", "se"), (1, 1)),
    "spatial_add_only": FLOAT_CASES["spatial_add_only"],
}
SLOW_INT8_CASES = ("se_bottleneck",)


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.slow) if name in SLOW_INT8_CASES else name
    for name in INT8_CASES
])
def test_int8_residual_epilogue_matches_the_unfolded_model(name, tmp_path, monkeypatch):
    """The int8 op with the epilogue against the same model with the ADD (and ReLU) left to
    XNNPACK: the same int8 maths up to one rounding of the block output; both near Keras."""
    make, epilogue = INT8_CASES[name]
    model = make()
    data = _calibration(model)
    folded, unfolded = tmp_path / "folded.tflite", tmp_path / "unfolded.tflite"
    to_tflite(model, folded, "int8", representative_data=data, fused_attention=True)
    found, counts = _epilogues(folded)
    assert found == [epilogue, epilogue]
    assert "ADD" not in counts and "RELU" not in counts
    for op in read_tflite(folded).ops:
        if op.is_custom:
            assert op.input_types[:2] == ("INT8", "INT8") and op.output_types == ("INT8",)
    _check_quantization_vectors(folded)
    monkeypatch.setattr(fused_residual, "fold_residual", lambda data: (data, 0))
    to_tflite(model, unfolded, "int8", representative_data=data, fused_attention=True)
    assert read_tflite(unfolded).op_counts()["ADD"] == 2

    x = data[:4]
    want = np.asarray(model(x, training=False))
    runtime, reference = edge.Runtime(folded, threads=1), edge.Runtime(unfolded, threads=1)
    got = np.concatenate([runtime(x[i : i + 1]) for i in range(len(x))])
    unfolded_out = np.concatenate([reference(x[i : i + 1]) for i in range(len(x))])
    assert _cosine(got, unfolded_out) >= 0.999
    assert _cosine(got, want) >= 0.99
    np.testing.assert_array_equal(edge.Runtime(folded, threads=2)(x[:1]), got[:1])
