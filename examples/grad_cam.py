"""Grad-CAM on a keras_attn model (TensorFlow or JAX backend), beside the model's own attention
maps.

`python examples/grad_cam.py` runs `keras_attn.maps.grad_cam` and `keras_attn.attention_maps` on
a small CBAM network with random weights and prints the shapes (`--verbose` shows TensorFlow's
own log lines); `KERAS_BACKEND=jax python examples/grad_cam.py` runs it on JAX.
"""

import sys

from keras_attn import logs

logs.quiet("--verbose" in sys.argv[1:])  # TensorFlow's C++ log lines stay out unless asked

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_attn  # noqa: E402


def main():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = keras_attn.CBAM(reduction_ratio=4, name="cbam")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4)(x))
    images = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    heat = keras_attn.maps.grad_cam(model, images, layer_name="cbam")  # each image's top class
    maps = keras_attn.attention_maps(model, images)
    print(f"Grad-CAM at 'cbam': {heat.shape}, values in [{heat.min():.2f}, {heat.max():.2f}]")
    print(f"CBAM's own spatial map: {maps['cbam']['spatial'].shape}")


if __name__ == "__main__":
    main()
