"""LiteRT export of attention models on 1D sequences and 3D volumes (float32, builtin ops)."""

import keras
import numpy as np
import pytest

import keras_attn
from keras_attn.export import LiteRTModel, to_tflite

pytestmark = pytest.mark.tf_only


def _model(shape, dilation_rate):
    inputs = keras.Input(shape)
    x = keras_attn.CBAM(reduction_ratio=2, kernel_size=3)(inputs)
    x = keras_attn.BAM(reduction_ratio=2, dilation_rate=dilation_rate)(x)
    return keras.Model(inputs, keras_attn.SqueezeExcite(reduction_ratio=2)(x))


@pytest.mark.parametrize(
    "shape, dilation_rate", [((16, 8), 2), ((4, 5, 6, 8), 1)], ids=["1d", "3d"]
)
def test_attention_exports_for_1d_and_3d_maps(shape, dilation_rate, tmp_path):
    model = _model(shape, dilation_rate)
    x = np.random.default_rng(0).standard_normal((1, *shape)).astype("float32")
    path = tmp_path / "model.tflite"
    to_tflite(model, path)
    np.testing.assert_allclose(
        LiteRTModel(path)(x), keras.ops.convert_to_numpy(model(x)), atol=1e-5
    )


def test_dilated_3d_convolution_is_refused_with_the_missing_ops(tmp_path):
    # LiteRT has no builtin for a dilated 3D convolution (BAM's spatial gate on volumes).
    message = r"needs ops that are not TFLite builtins \(TF Select ops: .*SpaceToBatchND"
    with pytest.raises(ValueError, match=message):
        to_tflite(_model((4, 5, 6, 8), dilation_rate=2), tmp_path / "model.tflite")
    assert not list(tmp_path.iterdir())
