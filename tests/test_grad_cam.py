"""The Grad-CAM recipe of docs/layers.md (examples/grad_cam.py) on a keras_attn model."""

import importlib.util
import os

import keras
import numpy as np
import pytest

import keras_attn

pytestmark = pytest.mark.tf_only

_EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples", "grad_cam.py")
_spec = importlib.util.spec_from_file_location("grad_cam_example", _EXAMPLE)
grad_cam_example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(grad_cam_example)


def test_grad_cam_matches_the_closed_form_of_a_linear_head():
    # With global average pooling and a linear Dense head, the class score's gradient at the
    # features is W[:, c] / (H * W) everywhere, so Grad-CAM is relu(sum_k W[k, c] A_k), scaled.
    inputs = keras.Input((6, 7, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    x = keras_attn.CBAM(reduction_ratio=2, kernel_size=3, name="cbam")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(3)
    model = keras.Model(inputs, dense(x))
    images = np.random.default_rng(0).standard_normal((2, 6, 7, 3)).astype("float32")

    heat = grad_cam_example.grad_cam(model, "cbam", images, class_index=1)
    features = keras.Model(model.inputs, model.get_layer("cbam").output).predict(images, verbose=0)
    expected = np.maximum(features @ np.asarray(dense.kernel)[:, 1], 0.0)
    expected /= expected.max(axis=(1, 2), keepdims=True)
    assert heat.shape == (2, 6, 7)
    np.testing.assert_allclose(heat, expected, atol=1e-5)

    top = grad_cam_example.grad_cam(model, "cbam", images)
    classes = model.predict(images, verbose=0).argmax(-1)
    for i, c in enumerate(classes):
        want = np.maximum(features[i] @ np.asarray(dense.kernel)[:, c], 0.0)
        np.testing.assert_allclose(top[i], want / want.max(), atol=1e-5)
