"""MobileNet with CBAM as in the CBAM paper's MobileNet table (width multiplier 0.7): its
parameter count against the paper's, where the 26 CBAM layers sit, a short training run and a
LiteRT export with the fused CBAM ops, run by `keras_attn.edge.Runtime` and checked against Keras.

Runs on random data at 96x96 in a couple of minutes on a CPU (the TensorFlow backend; the export
needs `ai-edge-litert`). `--verbose` shows TensorFlow's own log lines.
"""

import math
import os
import sys
import tempfile

from keras_attn import logs

logs.quiet("--verbose" in sys.argv[1:])  # TensorFlow's C++ log lines stay out unless asked

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_attn  # noqa: E402
from keras_attn import edge, models  # noqa: E402
from keras_attn.export import to_tflite  # noqa: E402

# The CBAM paper's MobileNet table at width 0.7 (millions of parameters, 1000 classes).
PAPER = {None: 2.30, "cbam": 2.71}


def trainable_count(model):
    return sum(math.prod(weight.shape) for weight in model.trainable_weights)


def main():
    for attention, paper in PAPER.items():
        count = trainable_count(models.mobilenet(0.7, attention=attention))
        print(f"MobileNet 0.7 + {attention or 'nothing'}: {count:,} trainable parameters "
              f"({count / 1e6:.2f}M; the paper: {paper:.2f}M)")

    keras.utils.set_random_seed(0)
    model = models.mobilenet(0.7, attention="cbam", input_shape=(96, 96, 3), num_classes=10)
    cbams = [layer for layer in model.layers if isinstance(layer, keras_attn.CBAM)]
    print(f"{len(cbams)} CBAM layers, one after each depthwise and pointwise convolution:")
    for layer in cbams[:4]:
        print(f"  {layer.name:22s} on {layer.input.shape[-1]} channels")
    print(f"  ... {cbams[-1].name} on {cbams[-1].input.shape[-1]} channels")

    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (32, 96, 96, 3)).astype("float32")
    labels = rng.integers(0, 10, 32)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    history = model.fit(images, labels, batch_size=8, epochs=2, verbose=0)
    print(f"trained 2 epochs on random data; loss {history.history['loss'][0]:.3f} -> "
          f"{history.history['loss'][-1]:.3f}")

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "cbam_mobilenet.tflite")
        report = to_tflite(model, path, fused_attention=True)
        print(report)
        runtime = edge.Runtime(path)
        got = runtime(images[:1])
        want = np.asarray(model(images[:1], training=False))
        print(f"LiteRT with the fused CBAM ops vs Keras: max |difference| "
              f"{np.abs(got - want).max():.2e}")


if __name__ == "__main__":
    main()
