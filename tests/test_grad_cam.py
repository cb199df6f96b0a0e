"""keras_attn.maps.grad_cam (TensorFlow and JAX) against NumPy: a closed form and finite
differences of the class score; and examples/grad_cam.py, which uses it."""

import importlib.util
import os
import re
import sys

import keras
import numpy as np
import pytest

import keras_attn
from keras_attn.maps import grad_cam

_EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples", "grad_cam.py")


def _scaled(cam):
    cam = np.maximum(cam, 0.0)
    return cam / cam.max(axis=tuple(range(1, cam.ndim)), keepdims=True)


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

    heat = grad_cam(model, images, layer_name="cbam", class_index=1)
    features = keras.Model(model.inputs, model.get_layer("cbam").output).predict(images, verbose=0)
    kernel = keras.ops.convert_to_numpy(dense.kernel)
    assert heat.shape == (2, 6, 7) and heat.dtype == np.float32
    np.testing.assert_allclose(heat, _scaled(features @ kernel[:, 1]), atol=1e-5)

    top = grad_cam(model, images)  # the last attention layer, each image's top class
    classes = model.predict(images, verbose=0).argmax(-1)
    expected = _scaled(np.einsum("nhwk,kn->nhw", features, kernel[:, classes]))
    np.testing.assert_allclose(top, expected, atol=1e-5)


def test_grad_cam_matches_finite_differences_through_a_nonlinear_head_and_a_shortcut():
    # After the CBAM: a shortcut around it, a ReLU 1x1 convolution, pooling and a softmax head.
    # The head is rewritten in NumPy (float64) and the Grad-CAM weights, the spatial mean of the
    # score's gradient at channel k, are its central differences along all of channel k at once.
    rng = np.random.default_rng(1)
    inputs = keras.Input((5, 6, 3))
    shortcut = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    attended = keras_attn.CBAM(reduction_ratio=2, kernel_size=3, name="cbam")(shortcut)
    x = keras.layers.Add()([attended, shortcut])
    mix = keras.layers.Conv2D(6, 1, activation="relu")
    x = keras.layers.GlobalAveragePooling2D()(mix(x))
    dense = keras.layers.Dense(3, activation="softmax")
    model = keras.Model(inputs, dense(x))
    images = rng.standard_normal((3, 5, 6, 3)).astype("float32")

    probe = keras.Model(model.inputs, [model.get_layer("cbam").output, shortcut])
    features, skip = (np.float64(a) for a in probe.predict(images, verbose=0))
    w_mix, b_mix, w_dense, b_dense = (
        np.float64(keras.ops.convert_to_numpy(v)) for v in (*mix.weights, *dense.weights)
    )

    def probabilities(a):
        pooled = np.maximum((a + skip) @ w_mix[0, 0] + b_mix, 0.0).mean(axis=(1, 2))
        logits = pooled @ w_dense + b_dense
        e = np.exp(logits - logits.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    for class_index in (None, 2):
        classes = probabilities(features).argmax(-1) if class_index is None else [2] * 3
        pick = (np.arange(3), classes)
        eps, hw = 1e-4, 5 * 6
        weights = np.empty((3, 4))
        for k in range(4):
            step = np.zeros(4)
            step[k] = eps
            rise = probabilities(features + step)[pick] - probabilities(features - step)[pick]
            weights[:, k] = rise / (2 * eps) / hw
        expected = _scaled(np.einsum("nhwk,nk->nhw", features, weights))
        heat = grad_cam(model, images, layer_name="cbam", class_index=class_index)
        assert heat.shape == (3, 5, 6) and heat.min() >= 0.0 and heat.max() <= 1.0
        np.testing.assert_allclose(heat, expected, atol=1e-5)


def test_a_layer_without_positive_evidence_gives_a_zero_map():
    # Non-negative features (a ReLU, then a gate) and a head whose weights are all negative.
    inputs = keras.Input((4, 4, 2))
    x = keras_attn.SqueezeExcite(reduction_ratio=1, name="se")(keras.layers.ReLU()(inputs))
    x = keras.layers.GlobalAveragePooling2D()(x)
    head = keras.layers.Dense(1, kernel_initializer=keras.initializers.Constant(-1.0))
    model = keras.Model(inputs, head(x))
    heat = grad_cam(model, np.ones((2, 4, 4, 2), "float32"))
    assert heat.shape == (2, 4, 4)
    np.testing.assert_array_equal(heat, 0.0)


def test_channels_first_and_one_dimensional_feature_maps():
    inputs = keras.Input((6, 4, 5))
    x = keras_attn.ChannelAttention(reduction_ratio=2, data_format="channels_first", name="ca")(
        inputs
    )
    dense = keras.layers.Dense(2)
    model = keras.Model(
        inputs, dense(keras.layers.GlobalAveragePooling2D(data_format="channels_first")(x))
    )
    images = np.random.default_rng(2).standard_normal((2, 6, 4, 5)).astype("float32")
    features = keras.Model(model.inputs, x).predict(images, verbose=0)
    kernel = keras.ops.convert_to_numpy(dense.kernel)
    heat = grad_cam(model, images, class_index=0)
    assert heat.shape == (2, 4, 5)
    expected = _scaled(np.einsum("nkhw,k->nhw", features, kernel[:, 0]))
    np.testing.assert_allclose(heat, expected, atol=1e-5)

    sequence = keras.Input((9, 3))
    x = keras_attn.CBAM(reduction_ratio=1, kernel_size=3, name="cbam")(sequence)
    dense = keras.layers.Dense(2)
    model = keras.Model(sequence, dense(keras.layers.GlobalAveragePooling1D()(x)))
    signals = np.random.default_rng(3).standard_normal((2, 9, 3)).astype("float32")
    features = keras.Model(model.inputs, x).predict(signals, verbose=0)
    kernel = keras.ops.convert_to_numpy(dense.kernel)
    heat = grad_cam(model, signals, class_index=1)
    assert heat.shape == (2, 9)
    np.testing.assert_allclose(heat, _scaled(features @ kernel[:, 1]), atol=1e-5)


def _small_model():
    inputs = keras.Input((5, 5, 2))
    x = keras.layers.Conv2D(3, 1, name="conv")(inputs)
    x = keras_attn.SqueezeExcite(reduction_ratio=1, name="se")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x), name="small")


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"layer_name": "nope"}, ValueError, r"must name a layer of small; got 'nope'"),
        ({"layer_name": 3}, TypeError, r"`layer_name` must be a str or None; got int"),
        ({"layer_name": "pool"}, ValueError, r"layer pool must be a feature map .* \(None, 3\)"),
        ({"class_index": 3}, ValueError, r"`class_index` must be in \[0, 3\) for small; got 3"),
        ({"class_index": -1}, ValueError, r"`class_index` must be in \[0, 3\) for small; got -1"),
        ({"class_index": 1.0}, TypeError, r"`class_index` must be an int or None; got float"),
        ({"class_index": True}, TypeError, r"`class_index` must be an int or None; got bool"),
    ],
)
def test_bad_arguments_are_errors_that_name_them(kwargs, error, message):
    with pytest.raises(error, match=message):
        grad_cam(_small_model(), np.ones((1, 5, 5, 2), "float32"), **kwargs)


def test_models_it_cannot_explain_are_errors():
    with pytest.raises(TypeError, match=r"`model` must be a keras.Model; got Conv2D"):
        grad_cam(keras.layers.Conv2D(2, 1), np.ones((1, 5, 5, 2), "float32"))
    inputs = keras.Input((5, 5, 2))
    head = keras.layers.Dense(2)(keras.layers.Flatten()(inputs))
    plain = keras.Model(inputs, head, name="plain")
    with pytest.raises(ValueError, match=r"plain has no attention layer of keras_attn; pass `lay"):
        grad_cam(plain, np.ones((1, 5, 5, 2), "float32"))
    gated = keras.Model(inputs, keras_attn.SqueezeExcite(reduction_ratio=1)(inputs), name="gated")
    with pytest.raises(ValueError, match=r"\(N, classes\); gated outputs shape \(None, 5, 5, 2\)"):
        grad_cam(gated, np.ones((1, 5, 5, 2), "float32"))


def test_other_backends_are_refused_by_name(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(NotImplementedError, match=r"TensorFlow or JAX; the Keras backend is 'tor"):
        grad_cam(_small_model(), np.ones((1, 5, 5, 2), "float32"))


def test_the_example_runs(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["grad_cam.py", "--verbose"])  # no log filter in pytest
    spec = importlib.util.spec_from_file_location("grad_cam_example", _EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    keras.utils.set_random_seed(0)  # the example's weights: a map with some positive evidence
    example.main()
    printed = capsys.readouterr().out
    assert re.search(r"Grad-CAM at 'cbam': \(2, 32, 32\), values in \[0\.\d\d, 1\.00\]", printed)
    assert "CBAM's own spatial map: (2, 32, 32, 1)" in printed
