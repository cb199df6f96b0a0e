"""NaN and infinity through the fused LiteRT ops (`keras_attn.edge.Runtime`): the non-finite
outputs of a fused CBAM, BAM or SE model are exactly the Keras layer's (same NaN mask, same
infinity masks), for a NaN or an infinity in the map and for a NaN or an infinity in the
weights (which TensorFlow's converter writes as the float32 maximum). float32 models only: an
int8 map holds no NaN (the model's QUANTIZE turns a NaN input into an integer), so an int8
model cannot give Keras' masks; an int8 op's scales are checked on load instead
(`test_edge_hardening.py`)."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("ai_edge_litert", reason="keras_attn.edge runs models in ai-edge-litert")

import keras_attn  # noqa: E402
from keras_attn import edge  # noqa: E402
from keras_attn.export import to_tflite  # noqa: E402
from keras_attn.export.flatbuffer import flatbuffer_utils  # noqa: E402

from test_non_finite import _assert_same_non_finite, _map, set_weight  # noqa: E402

SHAPE = (9, 7, 16)

LAYERS = {
    "cbam": lambda: keras_attn.CBAM(reduction_ratio=2),
    "se": lambda: keras_attn.SqueezeExcite(reduction_ratio=2),
    "bam": lambda: keras_attn.BAM(reduction_ratio=2),
    "bam_undilated": lambda: keras_attn.BAM(
        reduction_ratio=2, num_dilated_convs=1, dilation_rate=1
    ),
}


def _fused(name, tmp_path, weight=None):
    """(layer, Runtime) of a model of the layer alone, fused, with `weight` = (path suffix,
    index, value) set before export."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(SHAPE, batch_size=1)
    layer = LAYERS[name]()
    model = keras.Model(inputs, layer(inputs))
    if weight is not None:
        set_weight(layer, *weight)
    path = tmp_path / f"{name}.tflite"
    report = to_tflite(model, path, fused_attention=True)
    fused_ops = ("KerasAttnCBAM", "KerasAttnSE", "KerasAttnBAM")
    assert sum(report.op_counts.get(op, 0) for op in fused_ops) == 1
    return layer, edge.Runtime(path, threads=1)


@pytest.mark.parametrize("name", ["cbam", "se", "bam"])
def test_non_finite_inputs_match_keras(name, tmp_path):
    layer, run = _fused(name, tmp_path)
    for case in ["nan", "inf"]:
        x = _map(case)  # batch 2: run in two calls of the model's batch 1
        want = np.asarray(layer(x, training=False))
        assert not np.isfinite(want).all()
        _assert_same_non_finite(run(x), want)


WEIGHTS = {
    # a corner tap of the spatial convolution: outside the map on two borders
    "cbam_conv_nan": ("cbam", ("spatial_attention/conv/kernel", (0, 0, 0, 0), np.nan)),
    "cbam_conv_inf": ("cbam", ("spatial_attention/conv/kernel", (0, 0, 1, 0), np.inf)),
    "cbam_mlp_nan": ("cbam", ("mlp_hidden/kernel", (0, 0), np.nan)),
    "se_nan": ("se", ("reduce/kernel", (3, 1), np.nan)),
    "bam_undilated_conv_nan": (
        "bam_undilated", ("dilated_conv_0/kernel", (0, 0, 0, 0), np.nan)
    ),
    "bam_undilated_conv_neg_inf": (
        "bam_undilated", ("dilated_conv_0/kernel", (2, 2, 1, 3), -np.inf)
    ),
    "bam_dilated_conv_inf": ("bam", ("dilated_conv_1/kernel", (2, 1, 3, 1), np.inf)),
}


def _float_constants(path):
    """Every float32 constant of the `.tflite` file at `path`, flattened into one array."""
    fbu = flatbuffer_utils()
    with open(path, "rb") as f:
        model = fbu.read_model_from_bytearray(bytearray(f.read()))
    return np.concatenate([
        np.frombuffer(bytes(model.buffers[t.buffer].data), np.float32)
        for t in model.subgraphs[0].tensors
        if t.type == 0 and model.buffers[t.buffer].data is not None
    ])


@pytest.mark.parametrize("case", list(WEIGHTS))
def test_non_finite_weights_match_keras(case, tmp_path):
    name, (suffix, index, value) = WEIGHTS[case]
    layer, run = _fused(name, tmp_path, (suffix, index, value))
    if np.isinf(value):
        # TensorFlow's converter writes an infinite constant as the float32 maximum (in
        # builtin and fused models alike): the fused op matches Keras given that weight.
        largest = np.sign(value) * np.finfo(np.float32).max
        constants = _float_constants(run.path)
        assert not np.isinf(constants).any() and (constants == largest).sum() >= 1
        set_weight(layer, suffix, index, largest)
    x = _map("finite")
    want = np.asarray(layer(x, training=False))
    _assert_same_non_finite(run(x), want)
