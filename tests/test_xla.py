"""XLA: every attention layer trains and predicts with jit_compile=True, and its forward pass
compiles to one XLA computation (no numpy_function / py_function host round trips)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_attn

pytestmark = pytest.mark.tf_only

LAYERS = {
    "ChannelAttention": lambda: keras_attn.ChannelAttention(reduction_ratio=4),
    "SpatialAttention": lambda: keras_attn.SpatialAttention(),
    "CBAM": lambda: keras_attn.CBAM(reduction_ratio=4),
    "BAMChannelGate": lambda: keras_attn.BAMChannelGate(reduction_ratio=4),
    "BAMSpatialGate": lambda: keras_attn.BAMSpatialGate(reduction_ratio=4, dilation_rate=2),
    "BAM": lambda: keras_attn.BAM(reduction_ratio=4, dilation_rate=2),
    "SqueezeExcite": lambda: keras_attn.SqueezeExcite(reduction_ratio=4),
    "SelectiveKernel": lambda: keras_attn.SelectiveKernel(reduction_ratio=4, min_units=8),
    "ECA": lambda: keras_attn.ECA(),
}
HOST_CALLBACK_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}
SHAPE = (8, 8, 16)


@pytest.mark.parametrize("name", LAYERS)
def test_layer_compiles_whole_with_xla(name):
    layer = LAYERS[name]()
    x = tf.random.stateless_normal((2,) + SHAPE, seed=(1, 2))
    layer(x)  # build
    for training in (False, True):
        forward = tf.function(lambda t: layer(t, training=training), jit_compile=True)
        graph_ops = {op.type for op in forward.get_concrete_function(x).graph.get_operations()}
        assert not graph_ops & HOST_CALLBACK_OPS
        # Lowering to HLO fails for any op XLA cannot compile (host callbacks included).
        assert "ENTRY" in forward.experimental_get_compiler_ir(x)(stage="hlo")
    np.testing.assert_allclose(
        forward(x).numpy(), layer(x, training=True).numpy(), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("name", LAYERS)
def test_fit_and_predict_with_jit_compile(name):
    keras.utils.set_random_seed(0)
    inputs = keras.Input(SHAPE)
    x = LAYERS[name]()(inputs)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(1e-2), "mse", jit_compile=True)
    assert model.jit_compile
    rng = np.random.default_rng(0)
    data = rng.normal(size=(8,) + SHAPE).astype("float32")
    target = rng.normal(size=(8, 3)).astype("float32")
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(data, target, batch_size=4, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    changed = [not np.array_equal(w.numpy(), b) for w, b in zip(model.trainable_weights, before)]
    assert all(changed), [w.path for w, c in zip(model.trainable_weights, changed) if not c]
    np.testing.assert_allclose(
        model.predict(data, verbose=0), model(data, training=False).numpy(), atol=1e-5, rtol=1e-5
    )
