"""Classify an image with CBAM-ResNet-50 and the CBAM authors' ImageNet weights, then export it to
LiteRT (TFLite).

    python examples/resnet_cbam_inference.py --checkpoint RESNET50_CBAM_new_name_wrap.pth --image cat.jpg \
        --tflite cbam_resnet50.tflite

`--checkpoint` takes the authors' released checkpoint (`RESNET50_CBAM_new_name_wrap.pth`, linked
from the README of github.com/Jongchan/attention-module; reading it needs PyTorch:
`pip install torch`) or an `.npz` of the same state dict (arrays under
the same key names, no PyTorch needed). Without a checkpoint the model keeps its random initial
weights and says so; without an image it classifies random noise. Preprocessing is the authors'
evaluation transform: shorter side to 256, centre crop 224, ImageNet mean/std normalisation.
"""

import argparse
import functools
import sys

from keras_attn import logs

logs.quiet("--verbose" in sys.argv[1:])  # before TensorFlow is imported

import keras  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from keras_attn import models  # noqa: E402
from keras_attn.convert import load_torch_checkpoint, load_torch_state_dict  # noqa: E402
from keras_attn.export import LiteRTModel, to_tflite  # noqa: E402

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def load_image(path, resize=256, crop=224):
    """The authors' validation transform: Resize(256), CenterCrop(224), ToTensor, Normalize."""
    image = keras.utils.load_img(path)
    scale = resize / min(image.size)
    width, height = round(image.width * scale), round(image.height * scale)
    image = image.resize((width, height), Image.Resampling.BILINEAR)  # torchvision's Resize
    left, top = (width - crop) // 2, (height - crop) // 2
    image = image.crop((left, top, left + crop, top + crop))
    pixels = np.asarray(image, np.float32) / 255.0
    return ((pixels - IMAGENET_MEAN) / IMAGENET_STD)[None]


def load_weights(model, checkpoint):
    if checkpoint is None:
        print("No --checkpoint given: the weights are random (the authors' initialisation), "
              "so the predictions below mean nothing.")
    elif checkpoint.endswith(".npz"):
        with np.load(checkpoint) as arrays:
            load_torch_state_dict(model, dict(arrays))
        print(f"Loaded {checkpoint}.")
    else:
        load_torch_checkpoint(model, checkpoint)
        print(f"Loaded {checkpoint}.")


@functools.cache
def imagenet_class_names():
    """The 1000 class names in index order, or None offline (Keras downloads its index once)."""
    try:
        # decode_predictions sorts classes by score: scoring class i with i lists them 999..0.
        ranked = keras.applications.imagenet_utils.decode_predictions(
            np.arange(1000, dtype=np.float32)[None], top=1000)[0]
    except Exception:  # noqa: BLE001 - any download failure only means no names
        return None
    return [name for _, name, _ in reversed(ranked)]


def describe(probabilities, top=5):
    names = imagenet_class_names() if probabilities.shape[-1] == 1000 else None
    best = np.argsort(probabilities)[::-1][:top]
    return [f"{index:4d} {names[index] if names else '':24s} {probabilities[index]:.4f}"
            for index in best]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="the authors' .pth/.pth.tar, or an .npz state dict")
    parser.add_argument("--image", help="image file to classify (default: random noise)")
    parser.add_argument("--tflite", help="also export to this .tflite file and run it there")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's and LiteRT's own log lines")
    args = parser.parse_args()

    model = models.resnet50(attention="cbam")
    load_weights(model, args.checkpoint)
    if args.image:
        x = load_image(args.image)
    else:
        print("No --image given: classifying random noise.")
        x = np.random.default_rng(0).normal(size=(1, 224, 224, 3)).astype(np.float32)

    probabilities = keras.ops.convert_to_numpy(model.predict(x, verbose=0))[0]
    print("Keras top-5 (index, class, probability):")
    print("\n".join(describe(probabilities)))

    if args.tflite:
        report = to_tflite(model, args.tflite)
        print(f"Exported {report.path} ({report.size_bytes:,} bytes).")
        tflite_probabilities = LiteRTModel(report.path)(x)[0]
        print("LiteRT top-5:")
        print("\n".join(describe(tflite_probabilities)))
        print(f"Largest difference from Keras: "
              f"{np.abs(tflite_probabilities - probabilities).max():.2e}")


if __name__ == "__main__":
    main()
