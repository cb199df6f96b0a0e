"""A ResNet loaded from a pytorchcv checkpoint exports like any other model: `.keras`, LiteRT
float32 with builtin or fused ops, and int8 with fused ops. The stand-in is CBAM-ResNet-18 with
random pytorchcv-named weights and BatchNorm statistics (the published weights cannot be
downloaded in tests)."""

import keras
import numpy as np
import pytest
from test_convert_pytorchcv import pytorchcv_state_dict

from keras_attn import models
from keras_attn.convert import load_torch_state_dict

pytest.importorskip("ai_edge_litert", reason="the LiteRT exports run in ai-edge-litert")
from keras_attn import edge  # noqa: E402
from keras_attn.export import to_tflite  # noqa: E402

SHAPE = (32, 32, 3)


@pytest.fixture(scope="module")
def loaded():
    model = models.resnet18(attention="cbam", input_shape=SHAPE, num_classes=10,
                            classifier_activation=None)
    load_torch_state_dict(model, pytorchcv_state_dict(18, "cbam", num_classes=10, seed=21))
    data = np.random.default_rng(22).normal(size=(16,) + SHAPE).astype(np.float32)
    return model, data, np.asarray(model(data, training=False))


# Keras' TensorFlow-backend saving calls np.array on tensors without `copy` under NumPy 2.
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")
def test_keras_file_round_trip(loaded, tmp_path):
    model, data, want = loaded
    model.save(tmp_path / "cbam_resnet18.keras")
    reloaded = keras.saving.load_model(tmp_path / "cbam_resnet18.keras")
    np.testing.assert_array_equal(np.asarray(reloaded(data, training=False)), want)


@pytest.mark.slow
def test_litert_float32_and_int8_with_fused_ops(loaded, tmp_path):
    # The builtin-op export of the same graph is covered by the export tests; a converted
    # checkpoint differs from other models only in its weights.
    model, data, want = loaded
    scale = np.abs(want).max()
    assert want.std() > 1e-3  # far from a constant output
    fused, int8 = tmp_path / "fused.tflite", tmp_path / "int8.tflite"
    report = to_tflite(model, fused, fused_attention=True)
    assert report.op_counts["KerasAttnCBAM"] == 8  # one per residual block
    np.testing.assert_allclose(edge.Runtime(fused)(data[:1]), want[:1], atol=1e-4 * scale,
                               rtol=0)

    to_tflite(model, int8, "int8", representative_data=data, fused_attention=True)
    runtime = edge.Runtime(int8)
    got = np.concatenate([runtime(data[i:i + 1]) for i in range(4)])
    cosine = np.sum(got * want[:4]) / np.linalg.norm(got) / np.linalg.norm(want[:4])
    assert cosine > 0.98
