"""Data-parallel training of a CBAM + BAM model on two CPU devices matches one device.

- tf.distribute.MirroredStrategy (two logical CPUs): per-step loss within 5e-3 relative with
  each replica's own BatchNormalization statistics (the default, as in the authors'
  DataParallel training; measured 6e-4), and within 1e-5 with synchronized BatchNormalization
  (measured 1e-7).
- JAX backend, keras.distribution.DataParallel over two host devices: within 1e-5 (one SPMD
  program, so BatchNormalization sees the global batch; measured 0).

Devices must be configured before TensorFlow or JAX starts, so the training runs in fresh
interpreters: this file run as a script.
"""

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.tf_only, pytest.mark.slow]

EPOCHS, GLOBAL_BATCH, SAMPLES = 3, 32, 128


def _train(scope, synchronized_bn=False):
    import keras
    import numpy as np

    import keras_attn
    from keras_attn._keras_internals import nested_layers

    class StepLosses(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.losses = []

        def on_train_batch_end(self, batch, logs=None):
            self.losses.append(float(logs["loss"]))

    rng = np.random.default_rng(0)
    x = rng.normal(size=(SAMPLES, 12, 12, 3)).astype("float32")
    y = rng.integers(0, 4, SAMPLES)
    with scope:
        keras.utils.set_random_seed(0)
        inputs = keras.Input((12, 12, 3))
        h = keras.layers.Conv2D(16, 3, padding="same")(inputs)
        h = keras.layers.ReLU()(keras.layers.BatchNormalization()(h))
        h = keras_attn.CBAM(reduction_ratio=4)(h)
        h = keras_attn.BAM(reduction_ratio=4, dilation_rate=2)(h)
        h = keras.layers.GlobalAveragePooling2D()(h)
        model = keras.Model(inputs, keras.layers.Dense(4)(h))
        if synchronized_bn:  # every BatchNormalization, the blocks' own included
            for layer in nested_layers(model):
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.synchronized = True
        model.compile(
            keras.optimizers.SGD(0.05),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    steps = StepLosses()
    model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
              callbacks=[steps])
    return steps.losses, [w.tolist() for w in model.get_weights()]


def _tensorflow_worker():
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    single = tf.distribute.OneDeviceStrategy("/cpu:0")
    results = {"replicas": mirrored.num_replicas_in_sync}
    for synchronized_bn in (False, True):
        results[f"sync={synchronized_bn}"] = {
            "one": _train(single.scope(), synchronized_bn),
            "mirrored": _train(mirrored.scope(), synchronized_bn),
        }
    return results


def _jax_worker():
    import contextlib

    import keras

    one = _train(contextlib.nullcontext())
    devices = keras.distribution.list_devices()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    return {"replicas": len(devices), "one": one, "mirrored": _train(contextlib.nullcontext())}


def _run(backend):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND=backend)
    if backend == "jax":
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    done = subprocess.run(
        [sys.executable, __file__], capture_output=True, text=True, timeout=400, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(l for l in done.stdout.splitlines() if l.startswith("RESULTS"))
    return json.loads(line.removeprefix("RESULTS"))


@pytest.fixture(scope="module")
def results():
    return _run("tensorflow")


def _compare(run):
    import numpy as np

    (one_losses, one_weights), (two_losses, two_weights) = run["one"], run["mirrored"]
    one_losses, two_losses = np.array(one_losses), np.array(two_losses)
    assert len(one_losses) == len(two_losses) == EPOCHS * SAMPLES // GLOBAL_BATCH
    assert np.isfinite(two_losses).all()
    relative = np.abs(two_losses - one_losses) / one_losses
    weights = max(np.abs(np.array(a) - np.array(b)).max() for a, b in zip(one_weights, two_weights))
    return relative.max(), weights


def test_two_replicas(results):
    assert results["replicas"] == 2


def test_per_replica_batchnorm_matches_one_device(results):
    loss_difference, _ = _compare(results["sync=False"])
    assert loss_difference <= 5e-3


def test_synchronized_batchnorm_matches_one_device_exactly(results):
    loss_difference, weight_difference = _compare(results["sync=True"])
    assert loss_difference <= 1e-5
    assert weight_difference <= 1e-5


def test_jax_data_parallel_matches_one_device():
    results = _run("jax")
    assert results["replicas"] == 2
    loss_difference, weight_difference = _compare(results)
    assert loss_difference <= 1e-5
    assert weight_difference <= 1e-5


if __name__ == "__main__":
    import keras

    worker = _jax_worker if keras.backend.backend() == "jax" else _tensorflow_worker
    print("RESULTS" + json.dumps(worker()))
