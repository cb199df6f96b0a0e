"""int8 accuracy of every attention layer: cosine of the int8 LiteRT model's outputs vs Keras.

Each layer sits in a small CNN, `Conv2D(16) -> layer -> GlobalAveragePooling2D -> Dense(5)`, with
Keras' random initial weights and random BatchNormalization statistics (moving variance uniform
in 0.5-2, moving mean normal with standard deviation 0.2), as an untrained stand-in for a
trained model; the maps the layer sees are signed (no ReLU before it, as in a ResNet block).
The model is exported with `to_tflite(..., "int8")` calibrated on 64 random normal images, with
builtin ops only and with the fused custom ops, and compared with Keras on 32 other images
(the report's `agreement`). Prints a Markdown table.

    python examples/int8_accuracy.py              # every layer, builtin and fused
    python examples/int8_accuracy.py --resnet50   # also CBAM-ResNet-50 at 224x224 (minutes)
    python examples/int8_accuracy.py --layers CBAM SpatialAttention --builtin-only
"""

import argparse
import os
import sys
import tempfile

from keras_attn import logs

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
logs.quiet("--verbose" in sys.argv[1:])  # before TensorFlow is imported

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_attn  # noqa: E402
import keras_attn.models  # noqa: E402
from keras_attn.export import to_tflite  # noqa: E402

LAYERS = {
    "ChannelAttention": lambda: keras_attn.ChannelAttention(reduction_ratio=4),
    "SpatialAttention": lambda: keras_attn.SpatialAttention(),
    "CBAM": lambda: keras_attn.CBAM(reduction_ratio=4),
    "SqueezeExcite": lambda: keras_attn.SqueezeExcite(reduction_ratio=4),
    "BAM": lambda: keras_attn.BAM(reduction_ratio=4),
    "ECA": lambda: keras_attn.ECA(),
    "SelectiveKernel": lambda: keras_attn.SelectiveKernel(reduction_ratio=4, min_units=8),
}
# Layers `fused_attention=True` turns into custom ops; the others stay builtin there too.
FUSED = {"ChannelAttention", "SpatialAttention", "CBAM", "SqueezeExcite", "BAM"}
IMAGES = (16, 16, 3)
CALIBRATION, HELD_OUT = 64, 32


def randomize_batchnorm(model, seed, mean_std=0.2):
    """Random BatchNormalization statistics, as a trained model has (Keras' initial ones are
    the identity): moving variance uniform in 0.5-2, moving mean normal with `mean_std`."""
    rng = np.random.default_rng(seed)
    for v in model.variables:
        name = v.path.rsplit("/", 1)[-1]
        if name == "moving_mean":
            v.assign(rng.normal(0, mean_std, tuple(v.shape)).astype("float32"))
        elif name == "moving_variance":
            v.assign(rng.uniform(0.5, 2.0, tuple(v.shape)).astype("float32"))


def small_cnn(name, seed=0):
    """`Conv2D(16) -> layer -> GAP -> Dense(5)` with random weights, and its images."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(IMAGES)
    x = keras.layers.Conv2D(16, 3, padding="same")(inputs)  # signed maps, as before a ReLU
    x = LAYERS[name]()(x)
    outputs = keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    randomize_batchnorm(model, seed)
    images = np.random.default_rng(seed + 1).normal(0, 1, (CALIBRATION + HELD_OUT,) + IMAGES)
    return model, images.astype("float32")


def cbam_resnet50(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras_attn.models.resnet50(
        attention="cbam", input_shape=(224, 224, 3), classifier_activation=None)  # logits
    randomize_batchnorm(model, seed, mean_std=0.1)
    images = np.random.default_rng(seed + 1).normal(0, 1, (CALIBRATION + HELD_OUT, 224, 224, 3))
    return model, images.astype("float32")


def int8_cosine(model, images, folder, fused=False):
    """Cosine of the int8 export's outputs vs Keras on the held-out images, and its report."""
    report = to_tflite(
        model, os.path.join(folder, "model.tflite"), "int8",
        representative_data=images[:CALIBRATION], fused_attention=fused,
        validation_data=images[CALIBRATION:],
    )
    return report.agreement.cosine, report


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", nargs="+", choices=sorted(LAYERS), default=list(LAYERS))
    parser.add_argument("--builtin-only", action="store_true", help="skip the fused exports")
    parser.add_argument("--resnet50", action="store_true", help="add CBAM-ResNet-50 (slow)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's log lines")
    args = parser.parse_args()
    rows = [(name, lambda name=name: small_cnn(name, args.seed), name in FUSED)
            for name in args.layers]
    if args.resnet50:
        rows.append(("CBAM-ResNet-50, 224x224", lambda: cbam_resnet50(args.seed), True))
    print("| model | builtin int8 cosine | builtin int8 ops | fused int8 cosine |")
    print("|---|---|---|---|")
    for label, make, fusable in rows:
        model, images = make()
        with tempfile.TemporaryDirectory() as folder:
            builtin, report = int8_cosine(model, images, folder)
            fused = "(not fused)" if not fusable else "-"
            if fusable and not args.builtin_only:
                fused = f"{int8_cosine(model, images, folder, fused=True)[0]:.4f}"
        print(f"| {label} | {builtin:.4f} | {sum(report.op_counts.values())} | {fused} |",
              flush=True)


if __name__ == "__main__":
    main()
