"""`keras-attn demo`: a small CNN trained three ways (no attention, CBAM, BAM) on handwritten
digits, saved, exported to SavedModel and LiteRT (float32 and int8), and run in LiteRT.

Everything is written under one folder (`--out`): `models/*.keras`, `saved_model/*/`,
`tflite/*.tflite`, `attention_maps.png` and `results.json`.
"""

import json
import os
import time

import keras
import numpy as np

import keras_attn
from keras_attn.demo.data import load_digits_images
from keras_attn.demo.plots import save_attention_maps
from keras_attn.demo.report import litert_table, training_table
from keras_attn.export import LiteRTModel, to_saved_model, to_tflite
from keras_attn.export._agreement import cosine

VARIANTS = {"plain": None, "cbam": "cbam", "bam": "bam"}
LABELS = {"plain": "no attention", "cbam": "CBAM", "bam": "BAM"}


def build_cnn(attention, image_size, num_classes=10):
    """Three conv stages (16, 32, 64 channels); `attention` after the second and third."""

    def conv_bn_relu(x, filters, name):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=name)(x)
        # PyTorch's BN momentum: a few hundred steps must settle the moving statistics.
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
        return keras.layers.ReLU(name=f"{name}_relu")(x)

    inputs = keras.Input((image_size, image_size, 1), name="image")
    x = conv_bn_relu(inputs, 16, "conv1")
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    for stage, filters in ((2, 32), (3, 64)):
        x = conv_bn_relu(x, filters, f"conv{stage}")
        if attention is not None:
            block = keras_attn.get_attention(attention)
            x = block(reduction_ratio=8, name=f"{attention}{stage}")(x)
        if stage == 2:
            x = keras.layers.MaxPooling2D(name="pool2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    # Logits out: LiteRT 2.3's XNNPACK does not take an int8 SOFTMAX, which would split the
    # int8 model in two; the argmax needs no softmax anyway.
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=f"digits_{attention or 'plain'}")


class _Progress(keras.callbacks.Callback):
    """Drives a tqdm bar and times the training steps."""

    def __init__(self, bar):
        super().__init__()
        self.bar = bar
        self.step_seconds = []
        self._start = None

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.step_seconds.append(time.perf_counter() - self._start)
        self.bar.update(1)

    def on_epoch_end(self, epoch, logs=None):
        self.bar.set_postfix(loss=f"{logs['loss']:.3f}", acc=f"{logs['accuracy']:.3f}")


def _train(name, model, train, epochs, batch_size):
    from tqdm.auto import tqdm

    steps = -(-len(train[0]) // batch_size)
    # Cosine decay: the weights settle in the last epochs, so the attention blocks' own
    # BatchNormalization statistics (Keras' momentum 0.99) catch up with them before evaluation.
    schedule = keras.optimizers.schedules.CosineDecay(3e-3, decay_steps=epochs * steps)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    with tqdm(total=epochs * steps, desc=f"training {LABELS[name]:>12}", unit="step") as bar:
        progress = _Progress(bar)
        model.fit(*train, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=[progress])
    # Steady-state step time: skip the first epoch (tracing) when there is more than one.
    times = progress.step_seconds[steps:] if epochs > 1 else progress.step_seconds[2:]
    return 1000 * float(np.median(times or progress.step_seconds))


def _litert_figures(path, x_test, y_test, keras_logits):
    runner = LiteRTModel(path, num_threads=1)
    logits = runner(x_test)
    predicted = logits.argmax(axis=1)
    seconds = []
    for i in range(min(200, len(x_test))):  # batch 1, as on a device
        start = time.perf_counter()
        runner(x_test[i : i + 1])
        seconds.append(time.perf_counter() - start)
    return {
        "accuracy": float((predicted == y_test).mean()),
        "agreement": float((predicted == keras_logits.argmax(axis=1)).mean()),
        "cosine": cosine(logits, keras_logits),
        "max_abs_diff": float(np.abs(logits - keras_logits).max()),
        "ms_per_image": 1000 * float(np.median(seconds)),
        "xnnpack_partitions": runner.delegate_partitions,
        "fully_delegated": runner.fully_delegated(),
    }


def _attention_figure(model, x_test, y_test, path):
    block = model.get_layer("cbam2")
    features = keras.Model(model.input, block.input)(x_test, training=False)
    _, scores = block(features, training=False, return_attention_scores=True)
    spatial = keras.ops.convert_to_numpy(scores["spatial"])
    channel = keras.ops.convert_to_numpy(scores["channel"]).reshape(len(x_test), -1)
    predicted = model.predict(x_test, verbose=0).argmax(axis=1)
    labels = [f"{t} -> {p}" for t, p in zip(y_test, predicted)]
    height, width, channels = block.input.shape[1:]
    caption = (
        f"The CBAM block after the second convolution stage ({channels} channels on a "
        f"{height}x{width} map), on test digits. Middle: its spatial gate over the input (each "
        f"cell covers {x_test.shape[1] // height}x{x_test.shape[2] // width} pixels). Bottom: "
        f"its channel gate's strongest channels (index and gate value)."
    )
    save_attention_maps(path, x_test, spatial, channel, labels,
                        "What CBAM attends to (stage 2)", caption)


def run_demo(out, epochs=12, quick=False, seed=0, batch_size=32, print_fn=print):
    """Runs the demo and returns its results (also written to `out/results.json`).

    Args:
        out: output folder, created if missing.
        epochs: training epochs per model.
        quick: a smoke run: 400 digits at 16x16 instead of all 1797 at 32x32.
        seed: seeds the split, the weights and the shuffling.
        batch_size: training batch size.
        print_fn: where the tables go.
    """
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            "The demo exports SavedModel and LiteRT models, which needs the TensorFlow backend; "
            f"KERAS_BACKEND is {keras.backend.backend()!r}."
        )
    image_size = 16 if quick else 32
    for sub in ("models", "saved_model", "tflite"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    train, (x_test, y_test) = load_digits_images(image_size, seed, limit=400 if quick else None)
    print_fn(
        f"digits: {len(train[0])} training and {len(x_test)} test images at "
        f"{image_size}x{image_size}; {epochs} epoch(s) per model; output in {out}"
        + ("\n(--quick: a smoke run of every step; its accuracies mean nothing)" * quick)
    )
    results = {"image_size": image_size, "epochs": epochs, "train": len(train[0]),
               "test": len(x_test), "models": {}}
    started = time.perf_counter()
    trained = {}
    for name, attention in VARIANTS.items():
        keras.utils.set_random_seed(seed)
        model = build_cnn(attention, image_size)
        step_ms = _train(name, model, train, epochs, batch_size)
        logits = model.predict(x_test, verbose=0)
        keras_path = os.path.join(out, "models", f"{name}.keras")
        model.save(keras_path)
        reloaded = keras.saving.load_model(keras_path)
        reload_diff = np.abs(reloaded.predict(x_test, verbose=0) - logits).max()
        results["models"][name] = {
            "label": LABELS[name],
            "params": int(model.count_params()),
            "accuracy": float((logits.argmax(axis=1) == y_test).mean()),
            "train_step_ms": step_ms,
            "keras_reload_max_abs_diff": float(reload_diff),
        }
        trained[name] = (model, logits)
    print_fn(training_table(results))

    calibration = train[0][:200]
    for name, (model, logits) in trained.items():
        to_saved_model(model, os.path.join(out, "saved_model", name))
        entry = results["models"][name]
        for quantization in ("float32", "int8"):
            report = to_tflite(
                model,
                os.path.join(out, "tflite", f"{name}_{quantization}.tflite"),
                None if quantization == "float32" else "int8",
                representative_data=calibration if quantization == "int8" else None,
            )
            figures = _litert_figures(report.path, x_test, y_test, logits)
            figures.update(size_bytes=report.size_bytes, ops=sum(report.op_counts.values()))
            entry[f"litert_{quantization}"] = figures
    print_fn(litert_table(results))

    figure = os.path.join(out, "attention_maps.png")
    _attention_figure(trained["cbam"][0], x_test[:8], y_test[:8], figure)
    results["seconds"] = time.perf_counter() - started
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print_fn(f"attention maps: {figure}\nresults: {os.path.join(out, 'results.json')}")
    print_fn(f"done in {results['seconds']:.0f} s")
    return results
