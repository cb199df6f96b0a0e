"""The demo's data: scikit-learn's 8x8 handwritten digits (shipped with the package, no
download), upscaled to a size where convolutions and attention maps have room."""

import numpy as np


def load_digits_images(image_size, seed, train_fraction=0.8, limit=None):
    """Returns `(x_train, y_train), (x_test, y_test)`: float32 images `(N, S, S, 1)` in [0, 1].

    The 1797 digits are split per class (stratified) with `seed`; `limit` keeps only that many
    samples in total (the quick mode).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype("float32") / 16.0  # pixel values are 0..16
    labels = digits.target.astype("int32")
    if limit is not None and limit < len(images):
        images, _, labels, _ = train_test_split(
            images, labels, train_size=limit, stratify=labels, random_state=seed
        )
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, train_size=train_fraction, stratify=labels, random_state=seed
    )
    return (_upscale(x_train, image_size), y_train), (_upscale(x_test, image_size), y_test)


def _upscale(images, image_size):
    import keras

    resized = keras.ops.image.resize(images[..., None], (image_size, image_size), "bilinear")
    return np.clip(keras.ops.convert_to_numpy(resized), 0.0, 1.0).astype("float32")
