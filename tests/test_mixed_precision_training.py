"""Training under mixed_float16 and mixed_bfloat16 with every attention block stays finite and
follows the float32 loss curve: per-epoch loss within 1% (float16) and 2% (bfloat16) of float32,
from the same initial weights and batches (measured: below 0.1% for both)."""

import keras
import numpy as np
import pytest

import keras_attn

TOLERANCE = {"mixed_float16": 0.01, "mixed_bfloat16": 0.02}
EPOCHS = 3


def quadrant_patches(count, seed):
    """16x16 noise images with a bright 4x4 patch; the label is the patch's quadrant."""
    rng = np.random.default_rng(seed)
    images = rng.normal(0.0, 0.3, (count, 16, 16, 3)).astype("float32")
    labels = rng.integers(0, 4, count)
    for image, label in zip(images, labels):
        top = rng.integers(0, 5) + 8 * (label // 2)
        left = rng.integers(0, 5) + 8 * (label % 2)
        image[top : top + 4, left : left + 4] += 1.5
    return images, labels


def build():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(16, 3, padding="same")(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras_attn.CBAM(reduction_ratio=4)(x)
    x = keras_attn.BAM(reduction_ratio=4, dilation_rate=2)(x)
    x = keras_attn.SqueezeExcite(reduction_ratio=4)(x)
    x = keras_attn.SelectiveKernel(reduction_ratio=4, min_units=8)(x)
    x = keras_attn.ECA()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    # The logits in float32, as Keras' mixed precision guide recommends for the softmax.
    return keras.Model(inputs, keras.layers.Dense(4, dtype="float32")(x))


def train(policy, data):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = build()
        model.compile(
            keras.optimizers.Adam(3e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        history = model.fit(*data, batch_size=32, epochs=EPOCHS, shuffle=False, verbose=0)
    finally:
        keras.config.set_dtype_policy(previous)
    return model, np.array(history.history["loss"])


@pytest.fixture(scope="module")
def data():
    return quadrant_patches(192, seed=0)


@pytest.fixture(scope="module")
def float32_losses(data):
    _, losses = train("float32", data)
    assert losses[-1] < 0.95 * losses[0]  # it learns
    return losses


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_follows_float32_loss_curve(policy, data, float32_losses):
    model, losses = train(policy, data)
    half = policy.removeprefix("mixed_")
    attention = [layer for layer in model.layers if layer.__module__.startswith("keras_attn")]
    assert len(attention) == 5 and all(layer.compute_dtype == half for layer in attention)
    if policy == "mixed_float16":  # Keras adds dynamic loss scaling for float16
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert np.isfinite(losses).all()
    assert all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in model.weights)
    relative = np.abs(losses - float32_losses) / float32_losses
    assert relative.max() <= TOLERANCE[policy], relative
