"""Quickstart: a small CNN with `model.add(CBAM())`, trained briefly, saved and reloaded.

The task is synthetic: each 32x32 image holds a bright 6x6 patch on noise, and the label says in
which quadrant it sits. Run with `python examples/quickstart.py` (well under a minute on a CPU;
`--verbose` shows TensorFlow's own log lines).
"""

import os
import sys
import tempfile

from keras_attn import logs

logs.quiet("--verbose" in sys.argv[1:])  # TensorFlow's C++ log lines stay out unless asked

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_attn  # noqa: E402

IMAGE_SIZE = 32
PATCH = 6


def make_data(count, seed):
    """Noise images with one bright patch; the label is the patch's quadrant (0..3)."""
    rng = np.random.default_rng(seed)
    images = rng.normal(0.0, 0.3, (count, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    labels = rng.integers(0, 4, count)
    half = IMAGE_SIZE // 2
    for image, label in zip(images, labels):
        top = rng.integers(0, half - PATCH) + half * (label // 2)
        left = rng.integers(0, half - PATCH) + half * (label % 2)
        image[top : top + PATCH, left : left + PATCH] += 1.5
    return images, labels


def build_model():
    model = keras.Sequential([keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))])
    model.add(keras.layers.Conv2D(16, 3, padding="same", activation="relu"))
    model.add(keras_attn.CBAM(reduction_ratio=4))
    model.add(keras.layers.MaxPooling2D())
    model.add(keras.layers.Conv2D(32, 3, padding="same", activation="relu"))
    model.add(keras_attn.CBAM(reduction_ratio=8))
    model.add(keras.layers.GlobalMaxPooling2D())
    model.add(keras.layers.Dense(4, activation="softmax"))
    return model


def main():
    keras.utils.set_random_seed(0)
    x_train, y_train = make_data(1024, seed=0)
    x_test, y_test = make_data(256, seed=1)

    model = build_model()
    epochs, batch_size = 12, 32
    # A decaying learning rate lets the spatial gates' BatchNormalization statistics (momentum
    # 0.99, the authors' setting) catch up with the weights, so inference matches training.
    learning_rate = keras.optimizers.schedules.CosineDecay(
        3e-3, decay_steps=epochs * len(x_train) // batch_size
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    print(f"keras-attn {keras_attn.__version__} on the {keras.backend.backend()} backend")
    model.summary()

    history = model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=0)
    for epoch, (loss, accuracy) in enumerate(
        zip(history.history["loss"], history.history["accuracy"]), start=1
    ):
        print(f"epoch {epoch}: loss {loss:.4f}, accuracy {accuracy:.3f}")
    test_loss, test_accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"held-out: loss {test_loss:.4f}, accuracy {test_accuracy:.3f} (chance: 0.25)")

    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "cbam_quickstart.keras")
        model.save(path)
        print(f"saved {path} ({os.path.getsize(path) / 1024:.0f} KiB)")
        reloaded = keras.saving.load_model(path)
    expected = model.predict(x_test, verbose=0)
    actual = reloaded.predict(x_test, verbose=0)
    np.testing.assert_array_equal(actual, expected)
    print(f"reloaded model: outputs identical on {len(x_test)} images")

    # The attention maps, e.g. for plots: the last CBAM's gates on one image.
    features = x_test[:1]
    for layer in model.layers[:4]:
        features = layer(features, training=False)
    _, scores = model.layers[4](features, training=False, return_attention_scores=True)
    spatial = keras.ops.convert_to_numpy(scores["spatial"])[0, :, :, 0]
    peak = tuple(int(i) for i in np.unravel_index(spatial.argmax(), spatial.shape))
    print(
        f"last CBAM on one image: channel gate {tuple(scores['channel'].shape)}, "
        f"spatial gate {spatial.shape} peaking at {peak}"
    )


if __name__ == "__main__":
    main()
