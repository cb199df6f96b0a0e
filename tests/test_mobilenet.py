"""keras_attn.models.mobilenet: MobileNet with attention after every convolution of its
depthwise-separable blocks, counted against the CBAM paper's MobileNet table."""

import math

import keras
import numpy as np
import pytest

import keras_attn
from keras_attn import models


def trainable_count(model):
    return sum(math.prod(weight.shape) for weight in model.trainable_weights)


# Trainable parameters at 1000 classes, and the CBAM paper's MobileNet table (in millions, as
# printed there) for the rows it has; its "+SE" row at width 0.7, 2.71M, is 0.005M above ours.
@pytest.mark.parametrize("alpha, attention, count, paper", [
    (1.0, None, 4_231_976, 4.23),
    (1.0, "se", 5_072_114, 5.07),
    (1.0, "cbam", 5_074_714, 5.07),
    (0.7, None, 2_298_747, 2.30),
    (0.7, "se", 2_704_594, None),
    (0.7, "cbam", 2_707_194, 2.71),
])
def test_parameter_counts_match_the_cbam_paper(alpha, attention, count, paper):
    model = models.mobilenet(alpha, attention=attention)
    assert trainable_count(model) == count
    if paper is not None:
        assert round(count / 1e6, 2) == paper


@pytest.mark.parametrize("alpha, attention, count", [
    (1.0, "se", 4_718_044),
    (1.0, "cbam", 4_719_344),
    (0.7, "se", 2_533_521),
    (0.7, "cbam", 2_534_821),
])
def test_attention_after_the_pointwise_convolutions_only_falls_short_of_the_paper(
        alpha, attention, count):
    """The other placement one might read into the paper: 13 layers, about half its overhead."""
    base = keras.applications.MobileNet(alpha=alpha, weights=None)
    model = models.insert_attention(
        base, attention, where=lambda layer: layer.name.startswith("conv_pw_")
        and layer.name.endswith("_relu"))
    assert trainable_count(model) == count


def _producer(model, tensor):
    return next(layer.name for layer in model.layers if layer.output is tensor)


def test_attention_follows_each_depthwise_and_pointwise_convolution():
    model = models.mobilenet(0.25, attention="cbam", input_shape=(32, 32, 3), num_classes=10)
    assert model.name == "cbam_mobilenet_0.25_32"
    cbams = [layer for layer in model.layers if isinstance(layer, keras_attn.CBAM)]
    assert [layer.name for layer in cbams] == [
        f"conv_{kind}_{block}_relu_cbam" for block in range(1, 14) for kind in ("dw", "pw")
    ]
    for layer in cbams:
        assert _producer(model, layer.input) == layer.name.removesuffix("_cbam")
    # The next convolution reads the attention's output; the stem stays bare.
    assert _producer(model, model.get_layer("conv_pw_1").input) == "conv_dw_1_relu_cbam"
    assert _producer(model, model.get_layer("conv_pad_2").input) == "conv_pw_1_relu_cbam"
    assert _producer(model, model.get_layer("conv_dw_1").input) == "conv1_relu"
    # Every other layer is Keras' MobileNet's, under the names its ImageNet weights load by.
    keras_model = keras.applications.MobileNet(
        alpha=0.25, weights=None, input_shape=(32, 32, 3), classes=10)
    assert [layer.name for layer in model.layers if layer.weights and layer not in cbams] == [
        layer.name for layer in keras_model.layers if layer.weights]
    assert model.count_params() == keras_model.count_params() + sum(
        layer.count_params() for layer in cbams)


def test_without_attention_it_is_keras_mobilenet():
    model = models.mobilenet(0.25, input_shape=(32, 32, 3), include_top=False, pooling="avg")
    assert model.name == "mobilenet_0.25_32"
    assert model.output.shape == (None, 256)
    assert models.mobilenet(0.25, input_shape=(32, 32, 3), name="tiny").name == "tiny"


def test_runs_saves_and_takes_attention_kwargs(tmp_path):
    model = models.mobilenet(0.25, attention="se", input_shape=(32, 32, 3), num_classes=3,
                             attention_kwargs={"reduction_ratio": 4}, name="se_tiny")
    ses = [layer for layer in model.layers if isinstance(layer, keras_attn.SqueezeExcite)]
    assert len(ses) == 26 and all(layer.reduction_ratio == 4 for layer in ses)
    assert ses[0].name == "conv_dw_1_relu_se" and model.name == "se_tiny"
    x = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)).astype("float32")
    probabilities = np.asarray(model(x, training=False))
    assert probabilities.shape == (4, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    model.save(tmp_path / "se_tiny.keras")
    loaded = keras.saving.load_model(tmp_path / "se_tiny.keras")
    assert loaded.name == "se_tiny"
    np.testing.assert_allclose(loaded(x, training=False), probabilities, atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"`alpha` must be a positive number, got 0"):
        models.mobilenet(0)
    with pytest.raises(ValueError, match=r"`alpha` must be a positive number, got True"):
        models.mobilenet(True)
    with pytest.raises(ValueError, match=r"`weights` must be None or 'imagenet', got 'x.h5'"):
        models.mobilenet(weights="x.h5")
    with pytest.raises(ValueError, match=r"`attention_kwargs` needs an `attention`"):
        models.mobilenet(attention_kwargs={"reduction_ratio": 8})
    with pytest.raises(TypeError, match=r"`attention_kwargs` must be a dict, got \[8\]"):
        models.mobilenet(attention="cbam", attention_kwargs=[8])
    with pytest.raises(TypeError, match=r"`attention` must be an attention name .* got 3"):
        models.mobilenet(attention=3)
    with pytest.raises(ValueError, match=r"`name` must be one of"):
        models.mobilenet(attention="transformer")


@pytest.mark.slow
@pytest.mark.tf_only
def test_fused_export_runs_like_keras(tmp_path):
    pytest.importorskip("ai_edge_litert", reason="keras_attn.edge runs models in ai-edge-litert")
    from keras_attn import edge
    from keras_attn.export import read_tflite, to_tflite

    keras.utils.set_random_seed(0)
    model = models.mobilenet(0.25, attention="cbam", input_shape=(32, 32, 3), num_classes=10,
                             attention_kwargs={"kernel_size": 3})
    path = tmp_path / "cbam_mobilenet.tflite"
    to_tflite(model, path, fused_attention=True)
    assert read_tflite(path).op_counts()["KerasAttnCBAM"] == 26
    x = np.random.default_rng(1).uniform(-1, 1, (1, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(edge.Runtime(path, threads=1)(x), model(x, training=False),
                               atol=1e-5)
