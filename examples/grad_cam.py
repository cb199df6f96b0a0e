"""Grad-CAM on a keras_attn model (TensorFlow backend), beside the model's own attention maps.

`grad_cam(model, layer_name, images)` is the recipe of docs/layers.md; `python
examples/grad_cam.py` runs it and `keras_attn.attention_maps` on a small CBAM network with
random weights and prints the shapes (`--verbose` shows TensorFlow's own log lines).
"""

import sys

from keras_attn import logs

logs.quiet("--verbose" in sys.argv[1:])  # TensorFlow's C++ log lines stay out unless asked

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_attn  # noqa: E402


def grad_cam(model, layer_name, images, class_index=None):
    """Grad-CAM heat maps at the output of `layer_name`, shape (batch, H, W), each scaled to
    [0, 1]: ReLU of the feature maps weighted by the spatial mean of the class score's gradient.

    `class_index` None explains each image's top class; an int explains that class. The layer
    must output a channels_last 4-D map (an attention layer, or the convolution after it).
    """
    import tensorflow as tf

    layer = model.get_layer(layer_name)
    probe = keras.Model(model.inputs, [layer.output, model.output])
    images = tf.convert_to_tensor(images)
    with tf.GradientTape() as tape:
        features, predictions = probe(images, training=False)
        if class_index is None:
            classes = tf.argmax(predictions, axis=-1)
        else:
            classes = tf.fill(tf.shape(predictions)[:1], class_index)
        score = tf.gather(predictions, classes, axis=-1, batch_dims=1)
    weights = tf.reduce_mean(tape.gradient(score, features), axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))
    cam = cam / (tf.reduce_max(cam, axis=(1, 2), keepdims=True) + 1e-12)
    return cam.numpy()


def main():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = keras_attn.CBAM(reduction_ratio=4, name="cbam")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4)(x))
    images = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    heat = grad_cam(model, "cbam", images)
    maps = keras_attn.attention_maps(model, images)
    print(f"Grad-CAM at 'cbam': {heat.shape}, values in [{heat.min():.2f}, {heat.max():.2f}]")
    print(f"CBAM's own spatial map: {maps['cbam']['spatial'].shape}")


if __name__ == "__main__":
    main()
