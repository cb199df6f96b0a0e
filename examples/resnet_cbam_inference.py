"""Classify an image with the pretrained CBAM-ResNet-50 and print the top 5, then optionally
export it to LiteRT (TFLite) and compare.

    python examples/resnet_cbam_inference.py --image cat.jpg
    python examples/resnet_cbam_inference.py --image cat.jpg --tflite cbam_resnet50.tflite

By default the ImageNet weights are downloaded once (the CBAM authors' weights as pytorchcv
publishes them, about 100 MB, into ~/.keras/models; reading them needs PyTorch:
`pip install torch`). `--weights` takes a local checkpoint instead: a `.pth`/`.pth.tar` in the
authors' or pytorchcv's naming, or an `.npz` of such a state dict (no PyTorch needed). Without
an image it classifies random noise. Preprocessing is the checkpoints' evaluation transform:
shorter side to 256, centre crop 224, ImageNet mean/std normalisation.
"""

import argparse
import sys

from keras_attn import logs

logs.quiet("--verbose" in sys.argv[1:])  # before TensorFlow is imported

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_attn import models  # noqa: E402
from keras_attn.convert import load_torch_state_dict  # noqa: E402
from keras_attn.export import LiteRTModel, to_tflite  # noqa: E402


def build_model(weights):
    if weights is not None and weights.endswith(".npz"):
        model = models.resnet50(attention="cbam")
        with np.load(weights) as arrays:
            load_torch_state_dict(model, dict(arrays))
        return model
    try:
        return models.resnet50(attention="cbam", weights=weights or "imagenet")
    except (OSError, ImportError) as error:  # offline, or PyTorch missing
        sys.exit(f"The CBAM-ResNet-50 weights are not available: {error}")


def describe(probabilities):
    (top,) = models.decode_predictions(probabilities[None], top=5)
    return [f"  {wordnet_id} {name:28s} {score:.4f}" for wordnet_id, name, score in top]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", help="a local .pth/.pth.tar/.npz instead of the download")
    parser.add_argument("--image", help="image file to classify (default: random noise)")
    parser.add_argument("--tflite", help="also export to this .tflite file and run it there")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's and LiteRT's own log lines")
    args = parser.parse_args()

    model = build_model(args.weights)
    if args.image:
        x = models.preprocess_input(models.load_image(args.image)[None])
    else:
        print("No --image given: classifying random noise.")
        x = np.random.default_rng(0).normal(size=(1, 224, 224, 3)).astype(np.float32)

    probabilities = keras.ops.convert_to_numpy(model.predict(x, verbose=0))[0]
    print("Keras top 5 (WordNet id, class, probability):")
    print("\n".join(describe(probabilities)))

    if args.tflite:
        report = to_tflite(model, args.tflite)
        print(f"Exported {report.path} ({report.size_bytes:,} bytes).")
        tflite_probabilities = LiteRTModel(report.path)(x)[0]
        print("LiteRT top 5:")
        print("\n".join(describe(tflite_probabilities)))
        print(f"Largest difference from Keras: "
              f"{np.abs(tflite_probabilities - probabilities).max():.2e}")


if __name__ == "__main__":
    main()
