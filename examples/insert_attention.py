"""CBAM inserted into keras.applications.ResNet50, with the two-phase fine-tuning of docs/models.md.

Runs on random data with `weights=None` at 64x64 so that it needs no download and finishes in a
few minutes on a CPU; with ImageNet weights at hand, pass `--imagenet` (224x224, downloads
Keras' ResNet50 weights). `--verbose` shows TensorFlow's own log lines.
"""

import sys

from keras_attn import logs

logs.quiet("--verbose" in sys.argv[1:])  # TensorFlow's C++ log lines stay out unless asked

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_attn  # noqa: E402
from keras_attn.models import insert_attention  # noqa: E402


def main(argv):
    imagenet = "--imagenet" in argv
    size = 224 if imagenet else 64
    base = keras.applications.ResNet50(
        weights="imagenet" if imagenet else None, input_shape=(size, size, 3)
    )
    base_weights = base.get_weights()
    model = insert_attention(base, "cbam")
    cbams = [layer for layer in model.layers if isinstance(layer, keras_attn.CBAM)]
    print(f"{len(cbams)} CBAM layers, before the merges:")
    for layer in cbams:
        print(f"  {layer.name:24s} on {layer.input.shape[-1]} channels")
    print(f"parameters: {base.count_params():,} before, {model.count_params():,} after")

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (8, size, size, 3)).astype("float32")
    labels = rng.integers(0, 1000, 8)
    data = (keras.applications.resnet.preprocess_input(images), labels)

    # 1. Only the new attention layers train; the frozen backbone's BatchNorms run in inference.
    for layer in model.layers:
        layer.trainable = isinstance(layer, keras_attn.CBAM)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit(*data, batch_size=4, epochs=1, verbose=0)
    # 2. Everything, at a low rate.
    for layer in model.layers:
        layer.trainable = True
    model.compile(keras.optimizers.Adam(1e-5), "sparse_categorical_crossentropy")
    history = model.fit(*data, batch_size=4, epochs=1, verbose=0)
    print(f"fine-tuning ran; last loss {history.history['loss'][-1]:.3f}")
    unchanged = all(np.array_equal(a, b) for a, b in zip(base.get_weights(), base_weights))
    print(f"the original model's weights are untouched: {unchanged}")


if __name__ == "__main__":
    main(sys.argv[1:])
