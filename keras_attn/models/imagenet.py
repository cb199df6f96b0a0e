"""ImageNet inputs and labels as the pretrained checkpoints expect them, like `keras.applications`.

The CBAM/BAM authors' evaluation (and pytorchcv's) resizes the shorter side to 256 pixels, crops
the centre 224x224, scales RGB to [0, 1] and normalises each channel with the ImageNet mean
(0.485, 0.456, 0.406) and standard deviation (0.229, 0.224, 0.225). Class `i` of the 1000 is the
i-th ImageNet-1k synset in sorted WordNet-id order (`imagenet_classes.json`: the id and the
first name ImageNet's `synset_words.txt` gives it), the order of every ImageNet checkpoint here.
"""

import functools
import json
import os

import keras
import numpy as np

_CLASSES_FILE = os.path.join(os.path.dirname(__file__), "imagenet_classes.json")


def load_image(path, size=224, resize=256):
    """Reads an image file as the checkpoints were evaluated: shorter side to `resize`, centre crop.

    Args:
        path: image file (any format Pillow reads; `keras.utils.load_img` opens it).
        size: side of the square centre crop. Default 224.
        resize: the shorter side is scaled to this first (bilinear, as torchvision's `Resize`).
            Default 256.

    Returns:
        float32 array `(size, size, 3)`, RGB in [0, 255]: the input of `preprocess_input`.

    Example:

    >>> x = preprocess_input(load_image("cat.jpg")[None])  # doctest: +SKIP
    """
    for name, value in (("size", size), ("resize", resize)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
    if resize < size:
        raise ValueError(f"`resize` ({resize}) must be at least `size` ({size}).")
    from PIL import Image  # keras.utils.load_img needs Pillow too

    image = keras.utils.load_img(path, color_mode="rgb")
    # torchvision's Resize(resize) and CenterCrop(size), to the pixel.
    short, long = sorted(image.size)
    new_long = int(resize * long / short)
    width, height = (resize, new_long) if image.width <= image.height else (new_long, resize)
    image = image.resize((width, height), Image.Resampling.BILINEAR)
    left, top = round((width - size) / 2), round((height - size) / 2)
    return np.asarray(image.crop((left, top, left + size, top + size)), np.float32)


def preprocess_input(x, data_format=None):
    """Scales RGB images in [0, 255] to what the ImageNet checkpoints expect.

    `(x / 255 - mean) / std` per channel, with the ImageNet mean and standard deviation
    (`keras.applications.imagenet_utils.preprocess_input` with `mode="torch"`).

    Args:
        x: array or tensor of RGB images in [0, 255], channels last or first.
        data_format: `"channels_last"` or `"channels_first"`; None uses
            `keras.config.image_data_format()`.

    Returns:
        The normalised float images, same shape.
    """
    return keras.applications.imagenet_utils.preprocess_input(
        x, data_format=data_format, mode="torch")


def decode_predictions(predictions, top=5):
    """The `top` classes of each row of ImageNet predictions, like `keras.applications`.

    Args:
        predictions: array `(batch, 1000)` of probabilities or logits.
        top: how many classes per row. Default 5.

    Returns:
        One list per row of `(wordnet_id, class_name, score)` tuples, highest score first.
    """
    predictions = np.asarray(keras.ops.convert_to_numpy(predictions))
    if predictions.ndim != 2 or predictions.shape[1] != 1000:
        raise ValueError("`predictions` must be a batch of 1000 ImageNet scores, shape "
                         f"(batch, 1000), got shape {predictions.shape}.")
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= 1000:
        raise ValueError(f"`top` must be an int from 1 to 1000, got {top!r}.")
    classes = _imagenet_classes()
    best = np.argsort(-predictions, axis=1, kind="stable")[:, :top]
    return [[(*classes[index], float(row[index])) for index in indices]
            for row, indices in zip(predictions, best)]


@functools.cache
def _imagenet_classes():
    with open(_CLASSES_FILE, encoding="utf-8") as file:
        return [tuple(entry) for entry in json.load(file)]
