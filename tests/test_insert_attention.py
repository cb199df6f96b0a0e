"""keras_attn.models.insert_attention: attention on the residual branches of an existing model."""

import keras
import numpy as np
import pytest

import keras_attn
from keras_attn.models import insert_attention

CBAM_KWARGS = dict(reduction_ratio=2, kernel_size=3)


def _block(x, filters, name, project):
    """A small residual block; the projection block takes its Add inputs residual-first, as
    EfficientNet does, the identity block shortcut-first, as ResNet does."""
    r = keras.layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv1")(x)
    r = keras.layers.BatchNormalization(name=f"{name}_bn1")(r)
    r = keras.layers.ReLU(name=f"{name}_relu")(r)
    r = keras.layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv2")(r)
    r = keras.layers.BatchNormalization(name=f"{name}_bn2")(r)
    if project:
        shortcut = keras.layers.Conv2D(filters, 1, name=f"{name}_project")(x)
        return keras.layers.Add(name=f"{name}_add")([r, shortcut])
    return keras.layers.Add(name=f"{name}_add")([x, r])


def _residual_model():
    """Two residual blocks, the identity one then the projection one."""
    inputs = keras.Input((6, 7, 4))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = _block(x, 8, "block1", project=False)
    x = _block(x, 8, "block2", project=True)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(3, name="fc")(x)
    return keras.Model(inputs, outputs, name="small_resnet")


def _hand_built_with_cbam():
    inputs = keras.Input((6, 7, 4))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    # block1: identity
    r = keras.layers.Conv2D(8, 3, padding="same", name="block1_conv1")(x)
    r = keras.layers.BatchNormalization(name="block1_bn1")(r)
    r = keras.layers.ReLU(name="block1_relu")(r)
    r = keras.layers.Conv2D(8, 3, padding="same", name="block1_conv2")(r)
    r = keras.layers.BatchNormalization(name="block1_bn2")(r)
    r = keras_attn.CBAM(name="block1_add_cbam", **CBAM_KWARGS)(r)
    x = keras.layers.Add(name="block1_add")([x, r])
    # block2: projection
    r = keras.layers.Conv2D(8, 3, padding="same", name="block2_conv1")(x)
    r = keras.layers.BatchNormalization(name="block2_bn1")(r)
    r = keras.layers.ReLU(name="block2_relu")(r)
    r = keras.layers.Conv2D(8, 3, padding="same", name="block2_conv2")(r)
    r = keras.layers.BatchNormalization(name="block2_bn2")(r)
    r = keras_attn.CBAM(name="block2_add_cbam", **CBAM_KWARGS)(r)
    shortcut = keras.layers.Conv2D(8, 1, name="block2_project")(x)
    x = keras.layers.Add(name="block2_add")([r, shortcut])
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="fc")(x))


def _weights_by_name(model):
    return {layer.name: [np.array(w) for w in layer.get_weights()] for layer in model.layers}


def _randomize(model, seed=0):
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        low = 0.5 if "variance" in variable.path or "gamma" in variable.path else -0.5
        variable.assign(rng.uniform(low, low + 1.0, variable.shape).astype(variable.dtype))


def _producer(model, tensor):
    """The name of the layer of `model` that outputs `tensor`."""
    return next(layer.name for layer in model.layers if layer.output is tensor)


def test_cbam_goes_on_every_residual_branch_and_weights_are_kept(tmp_path):
    base = _residual_model()
    _randomize(base)
    before = _weights_by_name(base)
    model = insert_attention(base, "cbam", **CBAM_KWARGS)

    cbams = [layer for layer in model.layers if isinstance(layer, keras_attn.CBAM)]
    assert [layer.name for layer in cbams] == ["block1_add_cbam", "block2_add_cbam"]
    assert model.name == base.name and model.layers[0].name == base.layers[0].name
    assert [_producer(model, t) for t in model.get_layer("block1_add").input] == [
        "stem",
        "block1_add_cbam",
    ]
    assert [_producer(model, t) for t in model.get_layer("block2_add").input] == [
        "block2_add_cbam",
        "block2_project",
    ]
    assert model.count_params() == base.count_params() + sum(c.count_params() for c in cbams)
    for name, weights in before.items():
        for new, old in zip(model.get_layer(name).get_weights(), weights):
            np.testing.assert_array_equal(new, old)

    # The same network written by hand, with the same weights, computes the same outputs.
    expected_model = _hand_built_with_cbam()
    for layer in model.layers:
        if layer.weights:
            expected_model.get_layer(layer.name).set_weights(layer.get_weights())
    x = np.random.default_rng(1).standard_normal((2, 6, 7, 4)).astype("float32")
    np.testing.assert_allclose(
        model.predict(x, verbose=0), expected_model.predict(x, verbose=0), atol=1e-5
    )

    # Training the new model moves its attention and leaves the original model alone.
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    cbam_before = [np.array(w) for w in cbams[0].get_weights()]
    model.fit(x, np.ones((2, 3), "float32"), epochs=1, verbose=0)
    assert not np.allclose(cbams[0].get_weights()[0], cbam_before[0])
    for name, weights in before.items():
        for current, old in zip(base.get_layer(name).get_weights(), weights):
            np.testing.assert_array_equal(current, old)

    path = tmp_path / "with_cbam.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


@pytest.mark.parametrize(
    "attention, cls", [("se", keras_attn.SqueezeExcite), (keras_attn.ECA, keras_attn.ECA)]
)
def test_other_attention_kinds(attention, cls):
    model = insert_attention(_residual_model(), attention)
    inserted = [layer for layer in model.layers if isinstance(layer, cls)]
    assert len(inserted) == 2
    kind = attention if isinstance(attention, str) else "eca"
    assert inserted[0].name == f"block1_add_{kind}"


def test_attention_kwargs_reach_every_layer():
    model = insert_attention(_residual_model(), "cbam", reduction_ratio=4, spatial=False)
    cbams = [layer for layer in model.layers if isinstance(layer, keras_attn.CBAM)]
    assert all(c.reduction_ratio == 4 and c.spatial_attention is None for c in cbams)


def _plain_cnn():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv1")(inputs)
    x = keras.layers.Conv2D(4, 3, name="conv2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="fc")(x))


def test_where_places_attention_after_chosen_layers():
    base = _plain_cnn()
    model = insert_attention(
        base, "cbam", where=lambda layer: layer.name == "conv2", **CBAM_KWARGS
    )
    assert [_producer(model, t) for t in keras.tree.flatten(model.get_layer("flatten").input)] == [
        "conv2_cbam"
    ]
    assert sum(isinstance(layer, keras_attn.CBAM) for layer in model.layers) == 1
    x = np.zeros((1, 8, 8, 3), "float32")
    assert model.predict(x, verbose=0).shape == (1, 2)


def test_where_must_choose_4d_maps():
    with pytest.raises(ValueError, match=r"`where` accepted layer 'fc', whose output is not"):
        insert_attention(_plain_cnn(), where=lambda layer: layer.name == "fc")
    with pytest.raises(ValueError, match=r"`where` accepted no layer"):
        insert_attention(_plain_cnn(), where=lambda layer: False)
    with pytest.raises(TypeError, match=r"`where` must be None or a callable"):
        insert_attention(_plain_cnn(), where="conv2")


def test_a_model_without_merges_needs_where():
    with pytest.raises(ValueError, match=r"has no residual merge .* pass `where=`"):
        insert_attention(_plain_cnn())


def test_sequential_and_subclassed_models_are_refused():
    sequential = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)])
    with pytest.raises(TypeError, match=r"needs a functional model; got a Sequential model"):
        insert_attention(sequential)

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(4, 3)

        def call(self, x):
            return self.conv(x)

    with pytest.raises(TypeError, match=r"needs a functional keras.Model .* got Subclassed"):
        insert_attention(Subclassed())


def test_bad_attention_argument():
    with pytest.raises(TypeError, match=r"`attention` must be an attention name .* got 3"):
        insert_attention(_residual_model(), 3)
    with pytest.raises(ValueError, match=r"`name` must be one of"):
        insert_attention(_residual_model(), "transformer")


@pytest.mark.slow
def test_resnet50_gets_16_cbam_layers_and_keeps_every_weight():
    base = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10)
    model = insert_attention(base, "cbam")
    cbams = [layer for layer in model.layers if isinstance(layer, keras_attn.CBAM)]
    assert len(cbams) == 16
    assert {c.name for c in cbams} == {
        f"conv{stage}_block{block}_add_cbam"
        for stage, blocks in ((2, 3), (3, 4), (4, 6), (5, 3))
        for block in range(1, blocks + 1)
    }
    # The residual branch ends in the block's last BatchNormalization.
    assert _producer(model, cbams[0].input) == "conv2_block1_3_bn"
    for layer in base.layers:
        for new, old in zip(model.get_layer(layer.name).get_weights(), layer.get_weights()):
            np.testing.assert_array_equal(new, old)
    assert model.count_params() == base.count_params() + sum(c.count_params() for c in cbams)


def test_keras_attn_resnet18_gets_one_cbam_per_block():
    base = keras_attn.models.resnet18(input_shape=(32, 32, 3), num_classes=10)
    model = insert_attention(base, "cbam", reduction_ratio=8)
    cbams = [layer for layer in model.layers if isinstance(layer, keras_attn.CBAM)]
    assert len(cbams) == 8
    # The authors' blocks add the residual branch first; the shortcut stays bare.
    assert [_producer(model, t) for t in model.get_layer("layer1.0.add").input] == [
        "layer1.0.add_cbam",
        "maxpool",
    ]


@pytest.mark.tf_only
def test_inserted_model_exports_to_litert(tmp_path):
    from keras_attn.export import LiteRTModel, to_tflite

    model = insert_attention(_residual_model(), "cbam", **CBAM_KWARGS)
    x = np.random.default_rng(2).standard_normal((1, 6, 7, 4)).astype("float32")
    path = tmp_path / "model.tflite"
    to_tflite(model, path)
    np.testing.assert_allclose(LiteRTModel(path)(x), model.predict(x, verbose=0), atol=1e-5)


def test_a_shared_layer_gets_attention_after_each_call():
    inputs = keras.Input((8, 8, 3))
    shared = keras.layers.Conv2D(3, 3, padding="same", name="shared")
    x = shared(shared(inputs))
    base = keras.Model(inputs, keras.layers.Conv2D(2, 1, name="head")(x))
    model = insert_attention(base, "cbam", where=lambda layer: layer.name == "shared",
                             **CBAM_KWARGS)
    cbams = [layer for layer in model.layers if isinstance(layer, keras_attn.CBAM)]
    assert [c.name for c in cbams] == ["shared_cbam", "shared_cbam_2"]
    assert _producer(model, model.get_layer("head").input) == "shared_cbam_2"


def _cosine(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.tf_only
def test_inserted_model_exports_fused_with_the_residual_epilogue(tmp_path):
    """The fused LiteRT export of an inserted model: each inserted CBAM and the merge after it
    become one op, in float32 and int8, and `keras_attn.edge.Runtime` runs them like Keras."""
    pytest.importorskip("ai_edge_litert", reason="keras_attn.edge runs models in ai-edge-litert")
    from keras_attn import edge
    from keras_attn.export import read_tflite, to_tflite

    base = _residual_model()
    _randomize(base)
    model = insert_attention(base, "cbam", **CBAM_KWARGS)
    data = np.random.default_rng(3).standard_normal((16, 6, 7, 4)).astype("float32")
    want = np.asarray(model(data, training=False))

    path = tmp_path / "fused.tflite"
    to_tflite(model, path, fused_attention=True)
    counts = read_tflite(path).op_counts()
    assert counts["KerasAttnCBAM"] == 2 and "ADD" not in counts
    runtime = edge.Runtime(path, threads=1)
    got = np.concatenate([runtime(data[i : i + 1]) for i in range(len(data))])
    np.testing.assert_allclose(got, want, atol=1e-5)

    path = tmp_path / "fused_int8.tflite"
    to_tflite(model, path, "int8", representative_data=data, fused_attention=True)
    counts = read_tflite(path).op_counts()
    assert counts["KerasAttnCBAM"] == 2 and "ADD" not in counts
    runtime = edge.Runtime(path, threads=1)
    got = np.concatenate([runtime(data[i : i + 1]) for i in range(len(data))])
    assert _cosine(got, want) >= 0.99
